package filesource_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/backupverify/backupverify/verifier/filesource"
	"github.com/backupverify/backupverify/verifier/sourcetest"
)

func put(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestConformance(t *testing.T) {
	sourcetest.RunSuite(t, func(t *testing.T) sourcetest.Store {
		parent := t.TempDir()
		root := filepath.Join(parent, "backups")
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		return sourcetest.Store{
			Source: filesource.New(root),
			Put: func(t *testing.T, key string, b []byte) {
				put(t, filepath.Join(root, filepath.FromSlash(key)), b)
			},
			PutOutside: func(t *testing.T, name string, b []byte) {
				put(t, filepath.Join(parent, "backups-other", name), b)
				put(t, filepath.Join(parent, name), b)
			},
		}
	})
}

// TestETagChangesWhenMtimeIsKept replaces a file's content as `cp -p` and
// `rsync --inplace -t` do: same size, in place, modification time set back to
// the old one. Size and mtime alone then give the old ETag.
func TestETagChangesWhenMtimeIsKept(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "a.dump")
	put(t, p, []byte("version one"))
	src := filesource.New(root)
	objs, err := src.List(t.Context())
	if err != nil || len(objs) != 1 {
		t.Fatal(objs, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	put(t, p, []byte("version two"))
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	again, err := src.List(t.Context())
	if err != nil || len(again) != 1 {
		t.Fatal(again, err)
	}
	if objs[0].ETag == again[0].ETag {
		t.Fatalf("ETag %q unchanged after the content was replaced with its mtime kept", again[0].ETag)
	}
	if !objs[0].LastModified.Equal(again[0].LastModified) {
		t.Fatalf("LastModified moved: %v, then %v", objs[0].LastModified, again[0].LastModified)
	}
}

// TestListOfAMissingFolderFails: an unmounted share or a mistyped path is
// not an empty source (an S3 prefix cannot tell the two apart; a folder can).
func TestListOfAMissingFolderFails(t *testing.T) {
	if objs, err := filesource.New(filepath.Join(t.TempDir(), "absent")).List(t.Context()); err == nil {
		t.Fatalf("listed %v from a folder that does not exist, without error", objs)
	}
}

// TestDotFilesAreLeftOut: rsync writes .name.XXXXXX beside name before it
// renames it; such files and folders are unfinished, not backups.
func TestDotFilesAreLeftOut(t *testing.T) {
	root := t.TempDir()
	put(t, filepath.Join(root, ".a.dump.Xy12"), []byte("partial"))
	put(t, filepath.Join(root, ".tmp", "b.dump"), []byte("partial"))
	put(t, filepath.Join(root, "c.dump"), []byte("whole"))
	objs, err := filesource.New(root).List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Key != "c.dump" {
		t.Fatalf("listed %+v, want only c.dump", objs)
	}
}
