package pgscratch_test

import (
	"bytes"
	"context"
	"io/fs"
	"log/slog"
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

// templateOf is the one template folder in dir (it fails the test if
// there is not exactly one besides the lock).
func templateOf(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if e.Name() != ".lock" {
			names = append(names, e.Name())
		}
	}
	if len(names) != 1 || strings.HasPrefix(names[0], ".") {
		t.Fatalf("template folder %s holds %v, want one template", dir, names)
	}
	return filepath.Join(dir, names[0])
}

// systemID is the cluster's database system identifier: initdb draws a
// new one each time, a copy keeps its template's.
func systemID(t *testing.T, db verifier.ScratchDB) string {
	t.Helper()
	rows, err := db.Rows(context.Background(), "SELECT system_identifier::text FROM pg_control_system()", time.Minute)
	if err != nil || len(rows) != 1 {
		t.Fatalf("system identifier: %v %v", rows, err)
	}
	return rows[0][0]
}

// TestTemplateClusters: the first drill keeps its freshly initdb'd data
// folder as the template; the next is a copy of it (same system
// identifier), a working cluster of its own: a restore into one does not
// show in the other. The template is the daemon's (as root: root's, mode
// 0700, every file root's) and the cluster user can change nothing in it,
// while it owns its own copy.
func TestTemplateClusters(t *testing.T) {
	bins, err := pgscratch.FindBins(os.Getenv("BACKUPVERIFY_PG_BIN_DIR"))
	if err != nil {
		t.Fatal(err)
	}
	tdir := filepath.Join(t.TempDir(), "template")
	e := &pgscratch.Embedded{Bins: bins, Dir: testenv.ScratchDir(t), TemplateDir: tdir,
		Instance: "88888888888888888888888888888888", Log: testenv.Logger(t), Now: time.Now}
	t.Cleanup(e.Wait)
	ctx := context.Background()
	db1, err := e.CreateEarly(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	defer db1.Close(ctx)
	tpl := templateOf(t, tdir)
	key, _ := pgscratch.TemplateKey(bins)
	if b, err := os.ReadFile(filepath.Join(tpl, "key")); err != nil || string(b) != key {
		t.Fatalf("template key %q (%v), want %q", b, err, key)
	}
	db2, err := e.CreateEarly(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close(ctx)
	if c := pgscratch.ClusterOf(db2); c.TemplateErr != nil {
		t.Fatalf("second cluster not copied from the template: %v", c.TemplateErr)
	}
	if a, b := systemID(t, db1), systemID(t, db2); a != b {
		t.Errorf("second cluster's system identifier %s, want the template's %s (copied, not initdb'd)", b, a)
	}

	sql := filepath.Join(t.TempDir(), "d.sql")
	os.WriteFile(sql, []byte("CREATE TABLE drilled (x int);\nINSERT INTO drilled VALUES (1), (2);\n"), 0o644)
	info := verifier.ArchiveInfo{Format: verifier.FormatSQL, DumpVersion: "15.0"}
	if _, err := db1.Restore(ctx, sql, info, verifier.RestoreOptions{Jobs: 1}); err != nil {
		t.Fatalf("restore into the first cluster: %v", err)
	}
	if n, _, err := db1.Query(ctx, "SELECT count(*) FROM drilled", time.Minute); err != nil || n != 2 {
		t.Fatalf("first cluster: %v %v", n, err)
	}
	if n, _, err := db2.Query(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'drilled'", time.Minute); err != nil || n != 0 {
		t.Errorf("the second cluster sees the first one's restore: %v %v", n, err)
	}
	if _, err := db2.Restore(ctx, sql, info, verifier.RestoreOptions{Jobs: 1}); err != nil {
		t.Errorf("restore into the second cluster: %v", err)
	}

	// Everything in the template is the daemon's, and only it can write.
	me := os.Geteuid()
	err = filepath.WalkDir(tpl, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		if int(st.Uid) != me || st.Mode&0o022 != 0 {
			t.Errorf("%s: owner %d mode %o, want %d and not writable by others", p, st.Uid, st.Mode&0o7777, me)
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			t.Errorf("%s: neither a file nor a folder", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{tdir, tpl, filepath.Join(tpl, "data")} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v (%v), want 0700", p, fi.Mode(), err)
		}
	}
	if me != 0 {
		return
	}
	cred, _, err := pgscratch.ClusterUser("")
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	own := filepath.Join(pgscratch.ClusterOf(db2).Dir, "data", "postgresql.conf")
	if err := syscall.Stat(own, &st); err != nil || st.Uid != cred.Uid || st.Mode&0o777 != 0o600 {
		t.Errorf("the copy's %s: owner %d mode %o, want the cluster user %d and 0600", own, st.Uid, st.Mode&0o777, cred.Uid)
	}
	if err := syscall.Stat(filepath.Dir(own), &st); err != nil || st.Uid != cred.Uid || st.Mode&0o777 != 0o700 {
		t.Errorf("the copy's data folder: owner %d mode %o, want the cluster user %d and 0700", st.Uid, st.Mode&0o777, cred.Uid)
	}
	// As the cluster user, try to change the template the ways that matter.
	conf := filepath.Join(tpl, "data", "postgresql.conf")
	for _, script := range []string{
		"echo \"shared_preload_libraries = 'evil'\" >> " + conf,
		"touch " + filepath.Join(tpl, "data", "planted"),
		"touch " + filepath.Join(tdir, "planted"),
		"mv " + tpl + " " + tpl + ".moved",
		"ls " + filepath.Join(tpl, "data"),
	} {
		cmd := exec.Command("setpriv", "--reuid="+strconv.Itoa(int(cred.Uid)), "--regid="+strconv.Itoa(int(cred.Gid)),
			"--clear-groups", "sh", "-c", script)
		cmd.Dir = "/"
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("as the cluster user, %q worked: %s", script, out)
		}
	}
	if b, _ := os.ReadFile(conf); bytes.Contains(b, []byte("evil")) {
		t.Errorf("the cluster user changed the template's postgresql.conf")
	}
}

// TestTemplateRebuiltAndSwept: a half-made template (a .tmp-* folder left
// by a crash, even with the right key) is never used and is removed by the
// next build; a template whose key no longer matches (other programs) is
// made again; the sweep removes half-made ones and keeps the template; a
// template that cannot be copied (here: a symlink planted in it) costs an
// initdb and one warning, never the drill.
func TestTemplateRebuiltAndSwept(t *testing.T) {
	bins, err := pgscratch.FindBins(os.Getenv("BACKUPVERIFY_PG_BIN_DIR"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := pgscratch.TemplateKey(bins)
	if err != nil {
		t.Fatal(err)
	}
	tdir := filepath.Join(t.TempDir(), "template")
	crash := filepath.Join(tdir, ".tmp-123")
	os.MkdirAll(filepath.Join(crash, "data"), 0o700)
	os.WriteFile(filepath.Join(crash, "data", "PG_VERSION"), []byte("garbage\n"), 0o600)
	os.WriteFile(filepath.Join(crash, "key"), []byte(key), 0o600)
	var log bytes.Buffer
	e := &pgscratch.Embedded{Bins: bins, Dir: testenv.ScratchDir(t), TemplateDir: tdir, Instance: "99999999999999999999999999999999",
		Log: slog.New(slog.NewTextHandler(&log, nil)), Now: time.Now}
	t.Cleanup(e.Wait)
	ctx := context.Background()
	create := func() (verifier.ScratchDB, string) {
		t.Helper()
		db, err := e.CreateEarly(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		id := systemID(t, db)
		if err := db.Close(ctx); err != nil {
			t.Fatal(err)
		}
		e.Wait() // the spare made after it, from the template of then
		return db, id
	}
	_, id1 := create()
	if _, err := os.Stat(crash); err == nil {
		t.Errorf("the half-made template %s is still there", crash)
	}
	tpl := templateOf(t, tdir)

	// Made by other programs: made again.
	os.WriteFile(filepath.Join(tpl, "key"), []byte(strings.Replace(key, "major", "major 9", 1)), 0o600)
	os.WriteFile(filepath.Join(tpl, "data", "stale"), nil, 0o600)
	_, id2 := create()
	if id2 == id1 {
		t.Errorf("a template with another key was used (system identifier %s both times)", id1)
	}
	if b, _ := os.ReadFile(filepath.Join(templateOf(t, tdir), "key")); string(b) != key {
		t.Errorf("the template was not made again: key %q", b)
	}
	if _, err := os.Stat(filepath.Join(tpl, "data", "stale")); err == nil {
		t.Errorf("the old template's files are still there")
	}
	_, id3 := create()
	if id3 != id2 {
		t.Errorf("the remade template was not used: %s, want %s", id3, id2)
	}

	// The sweep removes a half-made template and keeps the template.
	os.MkdirAll(filepath.Join(tdir, ".tmp-456", "data"), 0o700)
	if err := e.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(tdir, ".tmp-456")); err == nil {
		t.Errorf("the sweep left a half-made template")
	}
	if b, _ := os.ReadFile(filepath.Join(templateOf(t, tdir), "key")); string(b) != key {
		t.Errorf("after the sweep the template's key is %q", b)
	}

	// A symlink in the template is refused: initdb after all, one warning,
	// and that cluster's data folder becomes the template. (The spare,
	// copied before the symlink was planted, would be used: it goes.)
	os.RemoveAll(pgscratch.SpareDir(e))
	os.Symlink("/etc/passwd", filepath.Join(templateOf(t, tdir), "data", "link"))
	db, err := e.CreateEarly(ctx, "t")
	if err != nil {
		t.Fatalf("a drill failed for want of a template: %v", err)
	}
	if c := pgscratch.ClusterOf(db); c.TemplateErr == nil {
		t.Errorf("a template holding a symlink was copied")
	} else if _, err := os.Lstat(filepath.Join(c.Dir, "data", "link")); err == nil {
		t.Errorf("the symlink reached the cluster")
	}
	id4 := systemID(t, db)
	if id4 == id3 {
		t.Errorf("the cluster has the template's system identifier, not initdb'd")
	}
	db.Close(ctx)
	if _, id5 := create(); id5 != id4 {
		t.Errorf("the template was not made again from the initdb'd cluster: %s, want %s", id5, id4)
	}
	if n := strings.Count(log.String(), "not copied from a template"); n != 1 {
		t.Errorf("%d warnings, want one: %s", n, log.String())
	}
}
