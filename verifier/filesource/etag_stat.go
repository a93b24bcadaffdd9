//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package filesource

import (
	"fmt"
	"io/fs"
	"syscall"
)

// etag is size, modification time, inode and change time. The inode changes
// when a file is replaced by a rename; the change time, which no tool can set,
// when it is rewritten in place with its modification time kept (cp -p).
func etag(fi fs.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Sprintf("%x-%x", fi.Size(), fi.ModTime().UnixNano())
	}
	sec, nsec := ctime(st)
	return fmt.Sprintf("%x-%x-%x-%x", fi.Size(), fi.ModTime().UnixNano(), uint64(st.Ino), sec*1e9+nsec)
}
