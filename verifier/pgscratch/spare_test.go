package pgscratch_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupverify/backupverify/internal/testenv"
	"github.com/backupverify/backupverify/verifier"
	"github.com/backupverify/backupverify/verifier/pgscratch"
)

// spareEmbedded is an Embedded with a template folder, its first drill
// (which makes the template) done and closed, and the spare that closing
// started made.
func spareEmbedded(t *testing.T, instance string) *pgscratch.Embedded {
	t.Helper()
	bins, err := pgscratch.FindBins(os.Getenv("BACKUPVERIFY_PG_BIN_DIR"))
	if err != nil {
		t.Fatal(err)
	}
	e := &pgscratch.Embedded{Bins: bins, Dir: testenv.ScratchDir(t), TemplateDir: filepath.Join(t.TempDir(), "template"),
		Instance: instance, Log: testenv.Logger(t), Now: time.Now}
	t.Cleanup(e.Wait)
	closeWait(t, e, createEarly(t, e))
	return e
}

func createEarly(t *testing.T, e *pgscratch.Embedded) verifier.ScratchDB {
	t.Helper()
	db, err := e.CreateEarly(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// closeWait closes a drill's database and waits for the spare it starts.
func closeWait(t *testing.T, e *pgscratch.Embedded, db verifier.ScratchDB) {
	t.Helper()
	if err := db.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.Wait()
}

// checkSpare fails the test unless e has a complete spare: a folder of
// the daemon's user, 0700, with data/ and its key file.
func checkSpare(t *testing.T, e *pgscratch.Embedded) {
	t.Helper()
	dir := pgscratch.SpareDir(e)
	if !strings.HasPrefix(filepath.Base(dir), ".spare-") || filepath.Dir(dir) != e.Dir {
		t.Fatalf("spare folder %s, want %s/.spare-*", dir, e.Dir)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil || int(st.Uid) != os.Geteuid() || st.Mode&0o7777 != 0o700 || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		t.Fatalf("spare %s: %v owner %d mode %o, want a folder of %d, 0700", dir, err, st.Uid, st.Mode, os.Geteuid())
	}
	key, _ := pgscratch.TemplateKey(e.Bins)
	if b, err := os.ReadFile(filepath.Join(dir, "key")); err != nil || !strings.HasPrefix(string(b), key) {
		t.Fatalf("spare key %q (%v), want the template's key %q first", b, err, key)
	}
	if err := syscall.Stat(filepath.Join(dir, "data", "PG_VERSION"), &st); err != nil || int(st.Uid) != os.Geteuid() {
		t.Fatalf("spare data: %v owner %d", err, st.Uid)
	}
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// TestSpareMadeAndUsed: closing a drill's cluster leaves a spare copy of
// the template (the daemon's, 0700; as root the cluster user can neither
// read nor change it); the next drill's cluster is that spare, renamed
// into place (a file dropped into the spare is in it, the same inode),
// handed to the cluster user, and works; closing it makes a new spare.
func TestSpareMadeAndUsed(t *testing.T) {
	e := spareEmbedded(t, "66666666666666666666666666666666")
	checkSpare(t, e)
	spare := pgscratch.SpareDir(e)
	data := filepath.Join(spare, "data")
	if me := os.Geteuid(); me == 0 {
		cred, _, err := pgscratch.ClusterUser("")
		if err != nil {
			t.Fatal(err)
		}
		for _, script := range []string{
			"echo \"shared_preload_libraries = 'evil'\" >> " + filepath.Join(data, "postgresql.conf"),
			"touch " + filepath.Join(data, "planted"),
			"touch " + filepath.Join(spare, "planted"),
			"rm -rf " + spare,
			"ls " + data,
		} {
			cmd := exec.Command("setpriv", "--reuid="+strconv.Itoa(int(cred.Uid)), "--regid="+strconv.Itoa(int(cred.Gid)),
				"--clear-groups", "sh", "-c", script)
			cmd.Dir = "/"
			if out, err := cmd.CombinedOutput(); err == nil {
				t.Errorf("as the cluster user, %q worked: %s", script, out)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(data, "spare-marker"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	var before syscall.Stat_t
	if err := syscall.Stat(filepath.Join(data, "PG_VERSION"), &before); err != nil {
		t.Fatal(err)
	}

	db := createEarly(t, e)
	c := pgscratch.ClusterOf(db)
	if !c.FromSpare || c.SpareErr != nil {
		t.Errorf("the cluster was not made from the spare: %v", c.SpareErr)
	}
	var after syscall.Stat_t
	if err := syscall.Stat(filepath.Join(c.Dir, "data", "PG_VERSION"), &after); err != nil || after.Ino != before.Ino {
		t.Errorf("the cluster's PG_VERSION is inode %d (%v), want the spare's %d", after.Ino, err, before.Ino)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(c.Dir, "data", "spare-marker"), &st); err != nil {
		t.Errorf("the file dropped into the spare is not in the cluster: %v", err)
	}
	if exists(spare) {
		t.Errorf("the spare %s is still there after it was used", spare)
	}
	if os.Geteuid() == 0 {
		cred, _, _ := pgscratch.ClusterUser("")
		for _, p := range []string{"data", "data/spare-marker", "data/base", "data/global/pg_control"} {
			if err := syscall.Lstat(filepath.Join(c.Dir, p), &st); err != nil || st.Uid != cred.Uid || st.Gid != cred.Gid {
				t.Errorf("%s: owner %d:%d (%v), want the cluster user %d:%d", p, st.Uid, st.Gid, err, cred.Uid, cred.Gid)
			}
		}
	}
	sql := filepath.Join(t.TempDir(), "d.sql")
	os.WriteFile(sql, []byte("CREATE TABLE drilled (x int);\nINSERT INTO drilled VALUES (1), (2);\n"), 0o644)
	info := verifier.ArchiveInfo{Format: verifier.FormatSQL, DumpVersion: "15.0"}
	if _, err := db.Restore(context.Background(), sql, info, verifier.RestoreOptions{Jobs: 1}); err != nil {
		t.Fatalf("restore into the cluster made from the spare: %v", err)
	}
	if n, _, err := db.Query(context.Background(), "SELECT count(*) FROM drilled", time.Minute); err != nil || n != 2 {
		t.Fatalf("cluster made from the spare: %v %v", n, err)
	}
	closeWait(t, e, db)
	checkSpare(t, e)
	if exists(filepath.Join(pgscratch.SpareDir(e), "data", "spare-marker")) {
		t.Errorf("the new spare holds the old one's marker")
	}
}

// TestSpareIncompleteStaleAndSwept: a spare without its key file (a copy
// cut short) or with another key is never used and is replaced by the
// next PrepareSpare; one holding a symlink is refused when moved in, and
// the template is copied instead; the sweep removes this instance's incomplete or stale
// spare, keeps a complete one, and leaves other instances' spares alone.
func TestSpareIncompleteStaleAndSwept(t *testing.T) {
	ctx := context.Background()
	e := spareEmbedded(t, "55555555555555555555555555555555")
	spare := pgscratch.SpareDir(e)
	marker := filepath.Join(spare, "data", "spare-marker")
	key, _ := os.ReadFile(filepath.Join(spare, "key"))

	for _, tc := range []struct {
		name  string
		spoil func()
	}{
		{"incomplete", func() { os.Remove(filepath.Join(spare, "key")) }},
		{"another key", func() {
			os.WriteFile(filepath.Join(spare, "key"), []byte(strings.Replace(string(key), "major", "major 9", 1)), 0o600)
		}},
		{"a symlink", func() { os.Symlink("/etc/passwd", filepath.Join(spare, "data", "link")) }},
	} {
		checkSpare(t, e)
		os.WriteFile(marker, nil, 0o600)
		tc.spoil()
		db := createEarly(t, e)
		c := pgscratch.ClusterOf(db)
		if c.FromSpare || exists(filepath.Join(c.Dir, "data", "spare-marker")) || exists(filepath.Join(c.Dir, "data", "link")) {
			t.Errorf("%s: the spare was used", tc.name)
		}
		if c.TemplateErr != nil || (c.SpareErr != nil) != (tc.name == "a symlink") {
			t.Errorf("%s: template error %v, spare error %v", tc.name, c.TemplateErr, c.SpareErr)
		}
		if err := db.Close(ctx); err != nil {
			t.Fatal(err)
		}
		e.Wait()
		if err := e.PrepareSpare(ctx); err != nil {
			t.Fatal(err)
		}
		checkSpare(t, e)
		if exists(marker) {
			t.Errorf("%s: the spare was not made again", tc.name)
		}
	}

	other := filepath.Join(e.Dir, ".spare-444444444444")
	os.MkdirAll(filepath.Join(other, "data"), 0o700)
	sweep := func() {
		t.Helper()
		if err := e.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		if !exists(filepath.Join(other, "data")) {
			t.Fatalf("the sweep removed another instance's spare")
		}
	}
	os.WriteFile(marker, nil, 0o600)
	sweep()
	if !exists(marker) {
		t.Errorf("the sweep removed a complete spare")
	}
	checkSpare(t, e)
	os.Remove(filepath.Join(spare, "key"))
	sweep()
	if exists(spare) {
		t.Errorf("the sweep left an incomplete spare")
	}
	if err := e.PrepareSpare(ctx); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(spare, "key"), key[:len(key)/2], 0o600)
	sweep()
	if exists(spare) {
		t.Errorf("the sweep left a spare with another key")
	}
	os.RemoveAll(other)
}

// TestDamagedCopiesAreReplaced: a template or spare whose copy does not
// start (pg_control emptied, as a crash while writing it could leave it)
// does not fail the drill: the cluster is made by initdb, and the template
// and spare are made again.
func TestDamagedCopiesAreReplaced(t *testing.T) {
	ctx := context.Background()
	e := spareEmbedded(t, "66666666666666666666666666666666")
	for _, where := range []string{"spare", "template"} {
		t.Run(where, func(t *testing.T) {
			checkSpare(t, e)
			tpl := templateOf(t, e.TemplateDir)
			if where == "template" {
				os.RemoveAll(pgscratch.SpareDir(e))
			}
			damaged := filepath.Join(pgscratch.SpareDir(e), "data", "global", "pg_control")
			if where == "template" {
				damaged = filepath.Join(tpl, "data", "global", "pg_control")
			}
			if err := os.Truncate(damaged, 0); err != nil {
				t.Fatal(err)
			}
			db := createEarly(t, e)
			if _, _, err := db.Query(ctx, "SELECT 1", time.Minute); err != nil {
				t.Fatalf("the drill's cluster does not answer: %v", err)
			}
			closeWait(t, e, db)
			checkSpare(t, e)
			if fi, err := os.Stat(filepath.Join(templateOf(t, e.TemplateDir), "data", "global", "pg_control")); err != nil || fi.Size() == 0 {
				t.Errorf("the template was not made again: %v", err)
			}
			if fi, err := os.Stat(filepath.Join(pgscratch.SpareDir(e), "data", "global", "pg_control")); err != nil || fi.Size() == 0 {
				t.Errorf("the spare was not made again: %v", err)
			}
		})
	}
}

// TestOrphanSparesSwept: a spare whose daemon's template folder is gone
// (its state_dir deleted) is removed by any daemon's sweep; one whose
// template still exists, or whose key names none, is left alone.
func TestOrphanSparesSwept(t *testing.T) {
	e := spareEmbedded(t, "77777777777777777777777777777778")
	mk := func(tag, key string) string {
		dir := filepath.Join(e.Dir, ".spare-"+tag)
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "key"), []byte(key), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	gone := mk("aaaaaaaaaaaa", "backupverify cluster template 1\ntemplate_dir \"/nonexistent/state/template/pg15-x\"\n")
	alive := mk("bbbbbbbbbbbb", "backupverify cluster template 1\ntemplate_dir \""+t.TempDir()+"\"\n")
	unnamed := mk("cccccccccccc", "backupverify cluster template 1\n")
	if err := e.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if exists(gone) {
		t.Error("the spare of a daemon whose template is gone was left")
	}
	if !exists(alive) || !exists(unnamed) {
		t.Error("the sweep removed a spare whose template exists, or whose key names none")
	}
	checkSpare(t, e)
}
