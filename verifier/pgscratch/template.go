package pgscratch

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// A template is a data folder initdb made, kept so that a drill copies it
// instead of running initdb again (which costs about a second and a half
// of CPU, more than starting the server). It lives in Embedded.TemplateDir,
// a folder of the daemon's user with mode 0700 that the cluster user cannot
// reach: as root the clusters run as another user, and a template that user
// could change would let it plant settings or libraries in every later
// drill. Each drill copies it into its cluster folder and, as root, hands
// the copy to the cluster user.
//
// TemplateDir holds at most one template, <name>/ with data/ and key (what
// made it, see templateKey), and a lock file: a template is built under the
// lock in a .tmp-* folder and renamed into place, so that a half-made one is
// never used; .tmp-* folders left by a crash are removed by the next build
// or sweep.
const (
	templateLock      = ".lock"
	templateTmpPrefix = ".tmp-"
	templateKeyFile   = "key"
)

// initdbArgs are initdb's arguments after -D: everything a template must
// agree on with the clusters made from it, with clusterEnv.
func initdbArgs(superuser string) []string {
	return []string{"-U", superuser, "-A", "trust", "--no-sync", "-E", "UTF8", "--locale", "C"}
}

// templateKey says what a template of bins would be made by: the bin
// folder and major, the size and time of initdb and postgres (a package
// upgrade changes them), initdb's arguments and environment.
func templateKey(bins Bins, superuser string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "backupverify cluster template 1\nbin_dir %q\nmajor %d\n", bins.Dir, bins.Major)
	for _, p := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(bins.Path(p))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s %d %d\n", p, fi.Size(), fi.ModTime().UnixNano())
	}
	fmt.Fprintf(&b, "initdb %q\nenv %q\n", initdbArgs(superuser), clusterEnv())
	return b.String(), nil
}

// templateName is the folder of the template with key in TemplateDir.
func templateName(bins Bins, key string) string {
	h := sha256.Sum256([]byte(key))
	return fmt.Sprintf("pg%d-%s", bins.Major, hex.EncodeToString(h[:6]))
}

// errTemplateBusy: another drill or process is building the template.
var errTemplateBusy = errors.New("the template is being built by another drill")

// prepareTemplateDir makes TemplateDir and checks that only this process's
// user can change it: a folder of ours, mode 0700, in a folder that others
// cannot write (or sticky).
func (e *Embedded) prepareTemplateDir() error {
	if err := os.MkdirAll(e.TemplateDir, 0o700); err != nil {
		return err
	}
	fi, err := os.Lstat(e.TemplateDir)
	if err != nil {
		return err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || st == nil || int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s is not a folder of this process's user", e.TemplateDir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(e.TemplateDir, 0o700); err != nil {
			return err
		}
	}
	parent, err := os.Stat(filepath.Dir(e.TemplateDir))
	if err != nil {
		return err
	}
	if parent.Mode().Perm()&0o022 != 0 && parent.Mode()&os.ModeSticky == 0 {
		return fmt.Errorf("%s: others may write %s", e.TemplateDir, filepath.Dir(e.TemplateDir))
	}
	return nil
}

// template is the data folder of the template for bins ("" if there is
// none yet or it was made by other programs) and the key it must have.
func (e *Embedded) template(bins Bins) (data, key string, err error) {
	if err := e.prepareTemplateDir(); err != nil {
		return "", "", err
	}
	if key, err = templateKey(bins, superuser); err != nil {
		return "", "", err
	}
	dir := filepath.Join(e.TemplateDir, templateName(bins, key))
	if got, err := ownRecord(filepath.Join(dir, templateKeyFile)); err != nil || got != key {
		return "", key, nil
	}
	return filepath.Join(dir, "data"), key, nil
}

// lockTemplates takes TemplateDir's lock without waiting (errTemplateBusy
// if someone holds it). The daemon's flock on state_dir keeps other
// daemons away; this one keeps out a concurrent drill, in this process or
// a `backupverify drill` run by hand.
func (e *Embedded) lockTemplates() (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(e.TemplateDir, templateLock), os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errTemplateBusy
		}
		return nil, err
	}
	return f, nil
}

// saveTemplate keeps a copy of data, just made by initdb, as the template
// for bins: built in a .tmp-* folder and renamed into place, replacing
// whatever TemplateDir held (a template of other programs, folders left by
// a crash).
func (e *Embedded) saveTemplate(bins Bins, key, data string) (err error) {
	lock, err := e.lockTemplates()
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := e.cleanTemplates(true); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(e.TemplateDir, templateTmpPrefix)
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // nothing left once renamed
	if err := os.Mkdir(filepath.Join(tmp, "data"), 0o700); err != nil {
		return err
	}
	// As root, data is the cluster user's, just made by its initdb: its
	// cluster folder is closed to that user while the copy is taken.
	if os.Geteuid() == 0 {
		parent := filepath.Dir(data)
		if fi, err := os.Lstat(parent); err == nil && fi.IsDir() {
			if err := os.Chmod(parent, 0o700); err != nil {
				return err
			}
			defer os.Chmod(parent, fi.Mode().Perm())
		}
	}
	if err := copyTree(data, filepath.Join(tmp, "data"), nil); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, templateKeyFile), []byte(key), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(e.TemplateDir, templateName(bins, key)))
}

// cleanTemplates removes the .tmp-* folders left by a build that did not
// finish, and with all the templates too; the caller holds the lock.
func (e *Embedded) cleanTemplates(all bool) error {
	ents, err := os.ReadDir(e.TemplateDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, ent := range ents {
		if ent.Name() == templateLock || !all && !strings.HasPrefix(ent.Name(), templateTmpPrefix) {
			continue
		}
		errs = append(errs, os.RemoveAll(filepath.Join(e.TemplateDir, ent.Name())))
	}
	return errors.Join(errs...)
}

// sweepTemplates removes what a template build that did not finish left,
// unless a build is under way.
func (e *Embedded) sweepTemplates() error {
	if _, err := os.Lstat(e.TemplateDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return e.unlessBuilding(func() error { return e.cleanTemplates(false) })
}

// unlessBuilding runs fn under the template's lock, or does nothing while
// a template is being built.
func (e *Embedded) unlessBuilding(fn func() error) error {
	lock, err := e.lockTemplates()
	if errors.Is(err, errTemplateBusy) {
		return nil
	}
	if err != nil {
		return err
	}
	defer lock.Close()
	return fn()
}

// copyTree copies the data folder src into the existing folder dst,
// keeping modes, and as owner if given (else as this process's user).
// Only folders and regular files are copied (initdb makes nothing else);
// anything else, and any path leading out of src, is an error. dst's
// entries are created exclusively and never followed; the caller makes
// sure no one else can write below dst while it runs (as root: dst is
// root's and 0700 until the copy is handed over).
func copyTree(src, dst string, owner *syscall.Credential) error {
	root, err := os.OpenRoot(src)
	if err != nil {
		return err
	}
	defer root.Close()
	return copyDir(root, ".", dst, owner)
}

// copyDir copies the folder root (rel names it, for errors) into dst. Each
// folder is a Root of its own, so that every file is opened by one name,
// relative to its folder: about a thousand files, each reached in one
// system call.
func copyDir(root *os.Root, rel, dst string, owner *syscall.Credential) error {
	d, err := root.Open(".")
	if err != nil {
		return err
	}
	ents, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, ent := range ents {
		r, p := filepath.Join(rel, ent.Name()), filepath.Join(dst, ent.Name())
		switch {
		case ent.Type().IsDir():
			info, err := ent.Info()
			if err != nil {
				return err
			}
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
			sub, err := root.OpenRoot(ent.Name())
			if err != nil {
				return err
			}
			err = copyDir(sub, r, p, owner)
			sub.Close()
			if err != nil {
				return err
			}
			if err := os.Chmod(p, info.Mode().Perm()); err != nil {
				return err
			}
			if owner != nil {
				if err := os.Lchown(p, int(owner.Uid), int(owner.Gid)); err != nil {
					return err
				}
			}
		case ent.Type().IsRegular():
			if err := copyFile(root, ent.Name(), r, p, owner); err != nil {
				return err
			}
		default:
			return fmt.Errorf("template %s: not a regular file or folder (%v)", r, ent.Type())
		}
	}
	return nil
}

func copyFile(root *os.Root, name, rel, dst string, owner *syscall.Credential) error {
	// O_NONBLOCK: a FIFO swapped in after the folder was listed must not
	// block the open (and the drill, and the template's lock) for ever.
	in, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("template %s: not a regular file", rel)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Nlink != 1 {
		// initdb makes no hard links: one would carry another file's
		// contents into every cluster.
		return fmt.Errorf("template %s: a file with other links", rel)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	// *os.File to *os.File: copy_file_range on Linux, in the kernel.
	_, err = io.Copy(out, in)
	if err == nil && fi.Mode().Perm() != 0o600 {
		err = out.Chmod(fi.Mode().Perm())
	}
	if err == nil && owner != nil {
		err = out.Chown(int(owner.Uid), int(owner.Gid))
	}
	return errors.Join(err, out.Close())
}
