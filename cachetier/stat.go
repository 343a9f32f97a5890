package cachetier

// sysStat is what the platform records of a file beyond fs.FileInfo (see
// the stat_*.go files); zero where it records nothing.
type sysStat struct {
	atime, ctime int64
	dev, ino     uint64
}
