// Package filesource is a verifier.Source over a local folder (file:///path/).
package filesource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/backupverify/backupverify/verifier"
)

// Source lists and reads the files below a folder.
type Source struct {
	root string
}

// New returns a Source over root.
func New(root string) *Source { return &Source{root: filepath.Clean(root)} }

func (s *Source) String() string { return "file://" + s.root + "/" }

// List walks the folder; hidden files and folders (a leading dot, as in
// editors' and uploaders' temporary files) are left out.
func (s *Source) List(ctx context.Context) ([]verifier.Object, error) {
	var out []verifier.Object
	err := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p != s.root && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		out = append(out, verifier.Object{
			Key:          filepath.ToSlash(rel),
			Size:         fi.Size(),
			ETag:         etag(fi),
			LastModified: fi.ModTime().UTC(),
		})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", s.root, err)
	}
	return out, nil
}

// Open opens a file below the folder.
func (s *Source) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	clean := path.Clean("/" + key)[1:]
	if clean == "" || clean != key {
		return nil, fmt.Errorf("open %q: not a key below %s", key, s.root)
	}
	f, err := os.Open(filepath.Join(s.root, filepath.FromSlash(clean)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open %s: %w", key, verifier.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return &ctxFile{ctx: ctx, f: f}, nil
}

// ctxFile stops reading once its context is done, as an S3 body does: a file
// read is never cancelled by the kernel, so a verification past its timeout
// would otherwise read a large backup to its end.
type ctxFile struct {
	ctx context.Context
	f   *os.File
}

func (c *ctxFile) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.f.Read(p)
}

func (c *ctxFile) Close() error { return c.f.Close() }

// StoredChecksum returns "" for a file that exists: a folder keeps no
// checksum beside the bytes.
func (s *Source) StoredChecksum(_ context.Context, key string) (string, error) {
	clean := path.Clean("/" + key)[1:]
	if clean == "" || clean != key {
		return "", fmt.Errorf("stat %q: not a key below %s", key, s.root)
	}
	_, err := os.Stat(filepath.Join(s.root, filepath.FromSlash(clean)))
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("stat %s: %w", key, verifier.ErrNotFound)
	}
	return "", err
}
