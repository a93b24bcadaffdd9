package pgdump

import (
	"os"
	"syscall"
)

// punchHole frees the file's blocks in [off, off+n) without changing its size.
func punchHole(f *os.File, off, n int64) {
	const keepSize, punch = 0x1, 0x2 // FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE
	_ = syscall.Fallocate(int(f.Fd()), keepSize|punch, off, n)
}
