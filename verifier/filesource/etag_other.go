//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package filesource

import (
	"fmt"
	"io/fs"
)

// etag is size and modification time where the platform gives no inode.
func etag(fi fs.FileInfo) string {
	return fmt.Sprintf("%x-%x", fi.Size(), fi.ModTime().UnixNano())
}
