//go:build linux || darwin || freebsd

package store

import "syscall"

// freeSpace returns the bytes available to unprivileged writers on the filesystem holding dir,
// and false when statfs fails.
func freeSpace(dir string) (int64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail) * int64(st.Bsize), true
}
