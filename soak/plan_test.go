package soak

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/backupverify/backupverify/internal/testenv"
)

// A fault is one slot of the day: what is done, which alerts must go pending
// or firing because of it (every other alert must stay silent), and how the
// day recovers.
//
// Expectations name an alert, or an alert and its severity
// ("BackupVerifyDrillFailed:critical"). They follow issue 11 and the
// metric/alert contract, not what the code does today.
type fault struct {
	name string
	// expect: each must be observed pending or firing after the injection.
	expect []string
	// hold: each must still be pending or firing when inject returns.
	hold []string
	// watched: the target must have been watched this long first (RPO and
	// similar alerts are silent before).
	watched time.Duration
	// inject does the damage and waits (bounded) for the daemon to have
	// seen it. It returns problems found on the way (a drill that did not
	// end, a leftover process), which fail the slot.
	inject func(e *env) []string
	// natural is how long the alerts may take to resolve on their own once
	// the fault is gone (a download retried, a restarted daemon scraped),
	// with no new backup and no drill. 0: the fault can only be healed by a
	// new good backup (and a passing drill, when a drill alert is active),
	// which the runner then provides.
	natural time.Duration
}

// plan is one round of the day, every fault once. The order matters only
// for faults that need the target to have been watched for a while.
func plan() []fault {
	return []fault{
		{
			name: "quiet: newest backup verified (round 1: start-up)",
			inject: func(e *env) []string {
				if !e.tryUntil(60*time.Second, func() bool {
					return e.metric(`backupverify_backup_checksum_ok{target="crm"}`) == 1
				}) {
					return []string{"the fresh backup was not verified within 60s"}
				}
				return nil
			},
			natural: 10 * time.Second,
		},
		{
			// A throttled prefix: listings work, every request for the new
			// backup's objects answers 503 SlowDown for 8s. A download
			// failure is not a verdict on the backup: retried later, it
			// passes; meanwhile only the download-failing warning is pending.
			name:   "503 storm on the newest backup (8s)",
			expect: []string{"BackupVerifyDownloadFailing:warning"},
			inject: func(e *env) []string {
				e.locked = true
				name := e.nextName()
				e.s3.Proxy.SetHook(testenv.Storm503("/"+bucket+"/"+prefix+name+"/", time.Now().Add(8*time.Second)))
				before := e.metric(`backupverify_backup_verify_failures_total{reason="download_error",target="crm"}`)
				e.backup(backupOpts{name: name})
				if !e.tryUntil(30*time.Second, func() bool {
					return e.metric(`backupverify_backup_verify_failures_total{reason="download_error",target="crm"}`) > before
				}) {
					return []string{"no download_error counted within 30s"}
				}
				return nil
			},
			natural: 10 * time.Second,
		},
		{
			name:   "stalled body: the newest dump stops after 4 KiB, 3 GETs",
			expect: []string{"BackupVerifyDownloadFailing:warning"},
			inject: func(e *env) []string {
				e.s3.Proxy.SetHook(nil)
				e.locked = true
				name := e.nextName()
				e.s3.Proxy.Stall(prefix+name+"/backup.dump", 4096, 3)
				before := e.metric(`backupverify_backup_verify_failures_total{reason="download_error",target="crm"}`)
				e.backup(backupOpts{name: name})
				if !e.tryUntil(40*time.Second, func() bool {
					return e.metric(`backupverify_backup_verify_failures_total{reason="download_error",target="crm"}`) > before
				}) {
					return []string{"no download_error counted within 40s"}
				}
				return nil
			},
			natural: 10 * time.Second,
		},
		{
			name:   "truncated body: the newest dump cut after 4 KiB, 3 GETs",
			expect: []string{"BackupVerifyDownloadFailing:warning"},
			inject: func(e *env) []string {
				e.locked = true
				name := e.nextName()
				h, _ := testenv.Truncate(prefix+name+"/backup.dump", 4096, 3)
				e.s3.Proxy.SetHook(h)
				before := e.metric(`backupverify_backup_verify_failures_total{reason="download_error",target="crm"}`)
				e.backup(backupOpts{name: name})
				if !e.tryUntil(30*time.Second, func() bool {
					return e.metric(`backupverify_backup_verify_failures_total{reason="download_error",target="crm"}`) > before
				}) {
					return []string{"no download_error counted within 30s"}
				}
				return nil
			},
			natural: 10 * time.Second,
		},
		{
			name:   "bit flip in a dump uploaded with the good checksum",
			expect: []string{"BackupVerifyChecksumFailed:critical"},
			inject: func(e *env) []string {
				e.s3.Proxy.SetHook(nil)
				e.locked = true
				before := e.metric(`backupverify_backup_verify_failures_total{reason="mismatch",target="crm"}`)
				e.backup(backupOpts{corrupt: true})
				if !e.tryUntil(30*time.Second, func() bool {
					return e.metric(`backupverify_backup_verify_failures_total{reason="mismatch",target="crm"}`) > before
				}) {
					return []string{"no mismatch counted within 30s"}
				}
				return nil
			},
		},
		{
			// Bit rot at rest: the stored file changes, its ETag and
			// LastModified do not, so the watch loop (which verified it)
			// cannot know. The drill downloads it and fails in verify:
			// the backup cannot be restored, which is critical.
			name:   "bit rot at rest in the verified newest dump, then a drill",
			expect: []string{"BackupVerifyDrillFailed:critical"},
			inject: func(e *env) []string {
				e.locked = true
				name, ok := e.backupVerified(backupOpts{}, 30*time.Second)
				if !ok {
					return []string{"the backup was not verified within 30s"}
				}
				if err := flipAtRest(filepath.Join(e.s3.Dir, bucket, prefix+name, "backup.dump")); err != nil {
					return []string{err.Error()}
				}
				if !e.drill(drillTO + 40*time.Second) {
					return []string{"the drill did not end"}
				}
				return nil
			},
		},
		{
			// The manifest never comes. Within backup_grace the backup may
			// still be being written; past it, the missing checksum is a
			// verdict.
			name:   "missing manifest past backup_grace",
			expect: []string{"BackupVerifyChecksumFailed:critical"},
			inject: func(e *env) []string {
				e.locked = true
				before := e.metric(`backupverify_backup_verify_failures_total{reason="missing_checksum",target="crm"}`)
				e.backup(backupOpts{noManifest: true})
				if !e.tryUntil(backupGrace+30*time.Second, func() bool {
					return e.metric(`backupverify_backup_verify_failures_total{reason="missing_checksum",target="crm"}`) > before
				}) {
					return []string{"no missing_checksum counted within grace + 30s"}
				}
				return nil
			},
		},
		{
			// latest/-style overwrite in place: the dump is replaced by a new
			// one, and its manifest follows two polls later. A new ETag is a
			// new backup; a manifest older than its dump, within grace, is a
			// backup still being written, not a mismatch. S3 lists whole
			// seconds: the new dump is listed in the old manifest's second,
			// as when both land within one.
			name: "newest object replaced in place, manifest updated after it",
			inject: func(e *env) []string {
				e.locked = true
				name := e.backups[len(e.backups)-1]
				before := e.verifiedTotal()
				body := e.dump("crm")
				e.put(prefix+name+"/backup.dump", body)
				dir := filepath.Join(e.s3.Dir, bucket, prefix+name)
				fi, err := os.Stat(filepath.Join(dir, "CHECKSUM"))
				if err != nil {
					return []string{err.Error()}
				}
				if err := os.Chtimes(filepath.Join(dir, "backup.dump"), fi.ModTime(), fi.ModTime()); err != nil {
					return []string{err.Error()}
				}
				e.sleep(2 * pollEvery)
				e.put(prefix+name+"/CHECKSUM", []byte(sha256hex(body)+"  backup.dump\n"))
				e.lastBackup = time.Now()
				if !e.tryUntil(30*time.Second, func() bool { return e.verifiedTotal() > before }) {
					return []string{"the replaced object was not verified within 30s"}
				}
				return nil
			},
			natural: 10 * time.Second,
		},
		{
			// The dumping host's clock jumped three hours ahead: its archive
			// header says so. A future time must never make the RPO look
			// better; the backup itself is good.
			name: "clock jump: archive header 3h in the future",
			inject: func(e *env) []string {
				e.locked = true
				if _, ok := e.backupVerified(backupOpts{headerShift: 3 * time.Hour}, 30*time.Second); !ok {
					return []string{"the backup was not verified within 30s"}
				}
				v := e.metric(`backupverify_backup_verified_timestamp_seconds{target="crm"}`)
				if now := float64(time.Now().Unix()); v > now+60 {
					return []string{fmt.Sprintf("backup_verified_timestamp_seconds is %.0fs in the future", v-now)}
				}
				return nil
			},
			natural: 10 * time.Second,
		},
		{
			// pg_restore hangs; the drill's deadline kills its process group.
			// A restore that cannot finish is critical.
			name:   "hung pg_restore (drill timeout)",
			expect: []string{"BackupVerifyDrillFailed:critical"},
			inject: func(e *env) []string {
				var problems []string
				before := drillsEnded(e.scrape())
				if !e.startHeldDrill("hang") {
					return []string{"the restore did not start"}
				}
				if !e.tryUntil(drillTO+40*time.Second, func() bool {
					m := e.scrape()
					return m != nil && drillsEnded(m) > before && m[`backupverify_drill_in_progress{target="crm"}`] == 0
				}) {
					problems = append(problems, "the hung drill did not end within its timeout + 40s")
				}
				e.setRestoreMode("")
				if !e.tryUntil(10*time.Second, func() bool { return len(e.strayProcesses()) == 0 }) {
					problems = append(problems, "left running: "+strings.Join(e.strayProcesses(), "; "))
				}
				return problems
			},
		},
		{
			// Drill B restores a backup with too few rows: checks fail
			// (warning for the drill, critical for the check). Drill C then
			// fails in restore: the check's verdict is still B's, so
			// IntegrityCheckFailed stays.
			name:   "failing check (backup of a smaller database), then a failing restore",
			expect: []string{"BackupVerifyDrillFailed:warning", "BackupVerifyIntegrityCheckFailed:critical", "BackupVerifyDrillFailed:critical"},
			hold:   []string{"BackupVerifyIntegrityCheckFailed:critical"},
			inject: func(e *env) []string {
				var problems []string
				e.locked = true
				if _, ok := e.backupVerified(backupOpts{db: "crm_small"}, 30*time.Second); !ok {
					return []string{"the backup was not verified within 30s"}
				}
				if !e.drill(drillTO + 40*time.Second) {
					return []string{"the drill did not end"}
				}
				e.obs.waitSeen(e, 10*time.Second, "BackupVerifyIntegrityCheckFailed:critical", "BackupVerifyDrillFailed:warning")
				e.setRestoreMode("fail")
				if !e.drill(drillTO + 40*time.Second) {
					problems = append(problems, "the second drill did not end")
				}
				e.setRestoreMode("")
				e.obs.waitSeen(e, 10*time.Second, "BackupVerifyDrillFailed:critical")
				return problems
			},
		},
		{
			// A reload while a drill restores, with a changed target (so its
			// loops are rebuilt). A reload is not a verdict: the drill ends
			// or is aborted, never FAIL.
			name: "SIGHUP mid-drill (target config changed)",
			inject: func(e *env) []string {
				var problems []string
				if !e.startHeldDrill("hold") {
					return []string{"the restore did not start"}
				}
				before := e.metric("backupverify_config_last_reload_success_timestamp_seconds")
				e.slowPoll = !e.slowPoll
				e.writeConfig()
				if err := e.daemon.Process.Signal(syscall.SIGHUP); err != nil {
					return []string{err.Error()}
				}
				if !e.tryUntil(20*time.Second, func() bool {
					return e.metric("backupverify_config_last_reload_success_timestamp_seconds") > before
				}) {
					problems = append(problems, "the reload did not succeed within 20s")
				}
				e.setRestoreMode("")
				if !e.tryUntil(drillTO+40*time.Second, func() bool {
					return e.metric(`backupverify_drill_in_progress{target="crm"}`) == 0 && len(e.leaks()) == 0
				}) {
					problems = append(problems, "the drill did not end and clean up: "+strings.Join(e.leaks(), "; "))
				}
				return problems
			},
			natural: 10 * time.Second,
		},
		{
			// Shutdown cancels the drill: not a verdict. The scrape fails
			// while the daemon is down (BackupVerifyDown pending, as it
			// should be), and nothing else.
			name:   "SIGTERM mid-drill, then restart",
			expect: []string{"BackupVerifyDown:critical"},
			inject: func(e *env) []string {
				return e.restartMidDrill(syscall.SIGTERM)
			},
			natural: 10 * time.Second,
		},
		{
			name:   "SIGKILL mid-drill, then restart",
			expect: []string{"BackupVerifyDown:critical"},
			inject: func(e *env) []string {
				return e.restartMidDrill(syscall.SIGKILL)
			},
			natural: 10 * time.Second,
		},
		{
			// Every backup newer than the one dated two hours ago is deleted:
			// the newest backup that exists is old, so the RPO really is
			// exceeded, and a scheduled backup is missing.
			name:    "newest backups deleted (only one from 2h ago left)",
			expect:  []string{"BackupVerifyRPOExceeded:critical", "BackupVerifyBackupMissed:warning"},
			watched: rpo + 15*time.Second,
			inject: func(e *env) []string {
				e.locked = true
				for _, name := range e.backups {
					if name == e.oldBackup {
						continue
					}
					e.delete(prefix + name + "/backup.dump")
					e.delete(prefix + name + "/CHECKSUM")
				}
				e.backups = []string{e.oldBackup}
				return nil
			},
		},
	}
}

// restartMidDrill stops the daemon with sig while a drill restores, waits
// for Prometheus to see it down, starts it again and waits for the start-up
// sweep to leave nothing behind.
func (e *env) restartMidDrill(sig syscall.Signal) []string {
	var problems []string
	if !e.startHeldDrill("hold") {
		return []string{"the restore did not start"}
	}
	err := e.stopDaemon(sig)
	e.setRestoreMode("")
	if sig == syscall.SIGTERM && err != nil {
		problems = append(problems, fmt.Sprintf("exit after SIGTERM: %v", err))
	}
	e.obs.waitSeen(e, 20*time.Second, "BackupVerifyDown:critical")
	e.startDaemon()
	if !e.tryUntil(30*time.Second, func() bool { return len(e.leaks()) == 0 }) {
		problems = append(problems, "left after restart: "+strings.Join(e.leaks(), "; "))
	}
	return problems
}

// flipAtRest flips one bit in the middle of a stored file and puts its
// modification time back, as bit rot would.
func flipAtRest(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	b := make([]byte, 1)
	off := st.Size() / 2
	if _, err := f.ReadAt(b, off); err != nil {
		f.Close()
		return err
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, off); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Chtimes(path, st.ModTime(), st.ModTime())
}
