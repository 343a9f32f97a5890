//go:build !(linux || darwin || freebsd)

package cachetier

import bolt "go.etcd.io/bbolt"

// releaseMapped: where madvise(2) is not at hand, the system alone
// decides which mapped pages stay resident.
func releaseMapped(*bolt.DB) {}
