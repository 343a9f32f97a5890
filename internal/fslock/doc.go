// Package fslock takes exclusive locks on files that the operating system
// releases when their holder dies, however it dies: a temp file or a
// sandbox whose lock can be taken was left behind by a dead process and may
// be removed. Where the platform has no such locks, age stands in.
package fslock
