// Package deploy holds no code: its tests check the files operators deploy
// (alert rules, Prometheus and Alertmanager configs, Kubernetes manifests,
// the systemd unit, the Grafana dashboard) with the real tools and types. It
// is a module of its own, so that the Kubernetes and kustomize libraries it
// validates with stay out of the daemon's dependencies.
package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/backupverify/backupverify/config"
	"github.com/backupverify/backupverify/metrics"
)

func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required (make test installs it): %v", name, err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(tool(t, name), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func TestPromtoolCheckRules(t *testing.T) { run(t, "promtool", "check", "rules", "../alerts.yaml") }
func TestPromtoolRuleUnitTests(t *testing.T) {
	run(t, "promtool", "test", "rules", "prometheus/alerts_test.yml")
}
func TestPrometheusConfig(t *testing.T) {
	run(t, "promtool", "check", "config", "--syntax-only", "prometheus/prometheus.yml")
}
func TestAlertmanagerConfig(t *testing.T) {
	run(t, "amtool", "check-config", "alertmanager/alertmanager.yml")
}

type ruleFile struct {
	Groups []struct {
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// specAlerts are the alerts of SPEC §6 and of the team's contract, with the
// severities each may have. BackupVerifyDrillFailed is two rules: critical for
// a drill that failed in verify or restore, warning for any other phase.
var specAlerts = map[string][]string{
	"BackupVerifyDown":                 {"critical"},
	"BackupVerifyAbsent":               {"critical"},
	"BackupVerifyRPOExceeded":          {"critical"},
	"BackupVerifyBackupMissed":         {"warning"},
	"BackupVerifyChecksumFailed":       {"critical"},
	"BackupVerifyDownloadFailing":      {"warning"},
	"BackupVerifyDrillFailed":          {"critical", "warning"},
	"BackupVerifyDrillOverdue":         {"critical"},
	"BackupVerifyRTOExceeded":          {"warning"},
	"BackupVerifyIntegrityCheckFailed": {"critical"},
	"BackupVerifyScanFailing":          {"warning"},
	"BackupVerifyStateWriteFailing":    {"warning"},
	"BackupVerifyReportFailing":        {"warning"},
	"BackupVerifyConfigReloadFailed":   {"warning"},
}

func TestRulesMatchSpecAndHaveRunbooks(t *testing.T) {
	b, err := os.ReadFile("../alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatal(err)
	}
	runbooks, err := os.ReadFile("../docs/runbooks.md")
	if err != nil {
		t.Fatal(err)
	}
	headings := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^## (\S+)$`).FindAllStringSubmatch(string(runbooks), -1) {
		headings[strings.ToLower(m[1])] = true
	}
	tested, _ := os.ReadFile("prometheus/alerts_test.yml")
	seen := map[string]bool{}
	severities := map[string][]string{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			seen[r.Alert] = true
			want, ok := specAlerts[r.Alert]
			if !ok {
				t.Errorf("%s is not an alert of SPEC §6", r.Alert)
				continue
			}
			severities[r.Alert] = append(severities[r.Alert], r.Labels["severity"])
			if !slices.Contains(want, r.Labels["severity"]) {
				t.Errorf("%s: severity %q, want one of %q", r.Alert, r.Labels["severity"], want)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			anchor := strings.ToLower(r.Alert)
			if !strings.HasSuffix(r.Annotations["runbook_url"], "docs/runbooks.md#"+anchor) || !headings[anchor] {
				t.Errorf("%s: runbook_url %q has no matching section in docs/runbooks.md", r.Alert, r.Annotations["runbook_url"])
			}
			if strings.Contains(r.Expr, "target=") {
				t.Errorf("%s: a rule must serve every target, not name one", r.Alert)
			}
			if !strings.Contains(string(tested), "alertname: "+r.Alert) {
				t.Errorf("%s has no promtool unit test", r.Alert)
			}
		}
	}
	var missing []string
	for a, want := range specAlerts {
		if !seen[a] {
			missing = append(missing, a)
			continue
		}
		got := slices.Sorted(slices.Values(severities[a]))
		if !slices.Equal(got, want) {
			t.Errorf("%s: rules with severities %q, want one rule for each of %q", a, got, want)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("alerts of SPEC §6 missing from alerts.yaml: %v", missing)
	}
}

func TestKubernetesManifests(t *testing.T) {
	objs := kustomizeBuild(t, "kubernetes")
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.kind]++
		var into any
		switch o.kind {
		case "Namespace":
			into = &corev1.Namespace{}
		case "ServiceAccount":
			into = &corev1.ServiceAccount{}
		case "PersistentVolumeClaim":
			into = &corev1.PersistentVolumeClaim{}
		case "ConfigMap":
			into = &corev1.ConfigMap{}
		case "Service":
			into = &corev1.Service{}
		case "Deployment":
			into = &appsv1.Deployment{}
		case "ServiceMonitor":
			into = &monitoringv1.ServiceMonitor{}
		case "PrometheusRule":
			into = &monitoringv1.PrometheusRule{}
		case "Role":
			into = &rbacv1.Role{}
		case "RoleBinding":
			into = &rbacv1.RoleBinding{}
		case "NetworkPolicy":
			into = &networkingv1.NetworkPolicy{}
		default:
			t.Errorf("unexpected kind %s", o.kind)
			continue
		}
		// Strict: a misspelt or misplaced field is an error, as the API server would say.
		if err := sigsyaml.UnmarshalStrict(o.yaml, into); err != nil {
			t.Errorf("%s %s: %v", o.kind, o.name, err)
			continue
		}
		switch v := into.(type) {
		case *appsv1.Deployment:
			checkDeployment(t, v)
		case *corev1.Namespace:
			if v.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
				t.Errorf("the namespace does not enforce the restricted Pod Security Standard: %v", v.Labels)
			}
		case *corev1.ServiceAccount:
			if v.AutomountServiceAccountToken == nil || *v.AutomountServiceAccountToken {
				t.Error("the ServiceAccount must not automount its token")
			}
		case *rbacv1.Role:
			checkPrometheusRole(t, v)
		case *rbacv1.RoleBinding:
			if v.RoleRef.Kind != "Role" || len(v.Subjects) != 1 || v.Subjects[0].Kind != "ServiceAccount" ||
				v.Subjects[0].Name != "prometheus-k8s" || v.Subjects[0].Namespace != "monitoring" {
				t.Errorf("the RoleBinding must grant the Role to kube-prometheus's monitoring/prometheus-k8s: %+v %+v", v.RoleRef, v.Subjects)
			}
		case *networkingv1.NetworkPolicy:
			checkNetworkPolicy(t, v)
		case *corev1.ConfigMap:
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "c.yml"), []byte(v.Data["backupverify.yml"]), 0o644)
			if _, err := config.Load(filepath.Join(dir, "c.yml")); err != nil {
				t.Errorf("the ConfigMap's config is invalid: %v", err)
			}
		case *corev1.Service:
			if v.Name != "backupverify" {
				t.Errorf("the Service must be named backupverify (the rules select job=\"backupverify\"), got %s", v.Name)
			}
		}
	}
	for _, k := range []string{"Namespace", "Deployment", "Service", "ServiceMonitor", "PrometheusRule", "ConfigMap", "ServiceAccount",
		"Role", "RoleBinding", "NetworkPolicy"} {
		if kinds[k] != 1 {
			t.Errorf("%d %s objects, want 1", kinds[k], k)
		}
	}
}

func checkDeployment(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	pod := d.Spec.Template.Spec
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot ||
		pod.SecurityContext.RunAsUser == nil || *pod.SecurityContext.RunAsUser == 0 {
		t.Error("the pod must run as a numeric non-root user")
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("the container needs a read-only root filesystem and no privilege escalation")
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("liveness must probe /healthz and readiness /readyz")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Error("resources are not set")
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			mounts[m.MountPath] = m.Name
		}
	}
	if mounts["/var/lib/backupverify"] == "" || mounts["/tmp"] == "" || mounts["/dev/shm"] == "" {
		t.Errorf("state_dir, /tmp and /dev/shm must be writable volumes: %v", mounts)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	if tmp := vols[mounts["/tmp"]].EmptyDir; tmp == nil || tmp.SizeLimit == nil || tmp.SizeLimit.IsZero() {
		t.Error("/tmp must be an emptyDir with a sizeLimit")
	}
	if shm := vols[mounts["/dev/shm"]].EmptyDir; shm == nil || shm.Medium != corev1.StorageMediumMemory || shm.SizeLimit == nil ||
		shm.SizeLimit.Cmp(*c.Resources.Limits.Memory()) >= 0 {
		t.Error("/dev/shm must be a memory-backed emptyDir with a sizeLimit below the memory limit")
	}
	if pod.SecurityContext == nil || pod.SecurityContext.FSGroupChangePolicy == nil ||
		*pod.SecurityContext.FSGroupChangePolicy != corev1.FSGroupChangeOnRootMismatch {
		t.Error("fsGroupChangePolicy must be OnRootMismatch: a recursive chown of state_dir at each start takes minutes")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the pod must not automount a service account token: it does not call the API")
	}
	if !regexp.MustCompile(`^[^:@]+/[^:@]+(:v\d+\.\d+\.\d+|@sha256:[0-9a-f]{64})$`).MatchString(c.Image) {
		t.Errorf("image %q: pin a release tag or a digest", c.Image)
	}
	// The restricted Pod Security Standard, as the API server's admission evaluates it.
	ev, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	lv := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	for _, r := range ev.EvaluatePod(lv, &d.Spec.Template.ObjectMeta, &pod) {
		if !r.Allowed {
			t.Errorf("restricted Pod Security Standard: %s: %s", r.ForbiddenReason, r.ForbiddenDetail)
		}
	}
}

// checkPrometheusRole: what kube-prometheus's Prometheus needs to discover
// the Service's endpoints in this namespace.
func checkPrometheusRole(t *testing.T, r *rbacv1.Role) {
	t.Helper()
	granted := map[string]bool{}
	for _, rule := range r.Rules {
		for _, g := range rule.APIGroups {
			for _, res := range rule.Resources {
				for _, v := range rule.Verbs {
					granted[g+"/"+res+":"+v] = true
				}
			}
		}
	}
	for _, res := range []string{"/services", "/endpoints", "/pods", "discovery.k8s.io/endpointslices"} {
		for _, v := range []string{"get", "list", "watch"} {
			if !granted[res+":"+v] {
				t.Errorf("the Role does not grant %s on %s", v, res)
			}
		}
	}
	for k := range granted {
		if strings.Contains(k, "secrets") || strings.HasSuffix(k, ":create") || strings.HasSuffix(k, ":update") || strings.HasSuffix(k, ":delete") || strings.Contains(k, "*") {
			t.Errorf("the Role grants more than discovery: %s", k)
		}
	}
}

// checkNetworkPolicy: ingress only from the monitoring namespace to the HTTP
// port; egress DNS and HTTPS only.
func checkNetworkPolicy(t *testing.T, np *networkingv1.NetworkPolicy) {
	t.Helper()
	if np.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != "backupverify" {
		t.Errorf("the NetworkPolicy selects %v", np.Spec.PodSelector.MatchLabels)
	}
	types := map[networkingv1.PolicyType]bool{}
	for _, pt := range np.Spec.PolicyTypes {
		types[pt] = true
	}
	if !types[networkingv1.PolicyTypeIngress] || !types[networkingv1.PolicyTypeEgress] {
		t.Errorf("the NetworkPolicy must restrict ingress and egress: %v", np.Spec.PolicyTypes)
	}
	port := func(p networkingv1.NetworkPolicyPort) string {
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		v := intstr.IntOrString{}
		if p.Port != nil {
			v = *p.Port
		}
		return string(proto) + "/" + v.String()
	}
	if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 1 || len(np.Spec.Ingress[0].Ports) != 1 ||
		np.Spec.Ingress[0].From[0].NamespaceSelector == nil ||
		np.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" ||
		port(np.Spec.Ingress[0].Ports[0]) != "TCP/9847" {
		t.Errorf("ingress must be TCP 9847 from the monitoring namespace only: %+v", np.Spec.Ingress)
	}
	egress := map[string]bool{}
	for _, e := range np.Spec.Egress {
		for _, p := range e.Ports {
			egress[port(p)] = true
		}
		if len(e.Ports) == 0 {
			t.Errorf("an egress rule without ports opens every port: %+v", e)
		}
	}
	for _, want := range []string{"UDP/53", "TCP/53", "TCP/443"} {
		if !egress[want] {
			t.Errorf("egress lacks %s", want)
		}
	}
	if len(egress) != 3 {
		t.Errorf("egress opens more than DNS and HTTPS: %v", egress)
	}
}

type object struct {
	kind, name string
	yaml       []byte
}

func kustomizeBuild(t *testing.T, dir string) []object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out []object
	for _, r := range rm.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, object{kind: r.GetKind(), name: r.GetName(), yaml: b})
	}
	return out
}

// generate runs scripts/gen-alerts.sh with JOB=job into a temporary folder
// and returns that folder.
func generate(t *testing.T, job string) (string, []byte, error) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("../scripts/gen-alerts.sh")
	cmd.Env = append(os.Environ(), "JOB="+job, "OUT_DIR="+dir)
	out, err := cmd.CombinedOutput()
	return dir, out, err
}

// The committed alerts.yaml and PrometheusRule are what make generate writes
// with the default job.
func TestGeneratedRulesAreCommitted(t *testing.T) {
	dir, out, err := generate(t, "backupverify")
	if err != nil {
		t.Fatalf("gen-alerts.sh: %v\n%s", err, out)
	}
	for gen, committed := range map[string]string{"alerts.yaml": "../alerts.yaml", "prometheusrule.yaml": "kubernetes/prometheusrule.yaml"} {
		want, _ := os.ReadFile(filepath.Join(dir, gen))
		got, err := os.ReadFile(committed)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what deploy/prometheus/alerts.in.yaml generates: run make generate", committed)
		}
	}
	// The PrometheusRule holds exactly the rule file.
	var alerts, rule map[string]any
	b, _ := os.ReadFile("../alerts.yaml")
	if err := yaml.Unmarshal(b, &alerts); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile("kubernetes/prometheusrule.yaml")
	if err := yaml.Unmarshal(b, &rule); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rule["spec"], alerts) {
		t.Error("the PrometheusRule's spec is not alerts.yaml")
	}
}

// make generate JOB=... puts that job in BackupVerifyDown and Absent, in both
// files, and Prometheus evaluates them on that job.
func TestGenerateWithJob(t *testing.T) {
	const job = "prod-backupverify"
	dir, out, err := generate(t, job)
	if err != nil {
		t.Fatalf("gen-alerts.sh: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "alerts.yaml"))
	if strings.Contains(string(b), `job="backupverify"`) || strings.Contains(string(b), "@JOB@") {
		t.Errorf("alerts.yaml generated with JOB=%s still selects another job:\n%s", job, b)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatal(err)
	}
	for _, r := range rf.Groups[0].Rules {
		if (r.Alert == "BackupVerifyDown" || r.Alert == "BackupVerifyAbsent") && !strings.Contains(r.Expr, `up{job="`+job+`"}`) {
			t.Errorf("%s: expr %q does not select job %q", r.Alert, r.Expr, job)
		}
	}
	rb, _ := os.ReadFile(filepath.Join(dir, "prometheusrule.yaml"))
	var pr monitoringv1.PrometheusRule
	if err := sigsyaml.UnmarshalStrict(rb, &pr); err != nil {
		t.Fatalf("generated PrometheusRule: %v", err)
	}
	for _, r := range pr.Spec.Groups[0].Rules {
		if r.Alert == "BackupVerifyDown" && r.Expr.String() != `up{job="`+job+`"} == 0` {
			t.Errorf("PrometheusRule BackupVerifyDown: %q", r.Expr.String())
		}
	}
	run(t, "promtool", "check", "rules", filepath.Join(dir, "alerts.yaml"))

	// Down fires for the renamed job; Absent stays silent while it is scraped,
	// and fires when only the old name is.
	test := fmt.Sprintf(`rule_files: [%s]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - {series: 'up{job="%[2]s",instance="a:9847"}', values: '1x10 0x20'}
      - {series: 'up{job="backupverify",instance="b:9847"}', values: '1x30'}
    alert_rule_test:
      - {eval_time: 20m, alertname: BackupVerifyAbsent, exp_alerts: []}
      - eval_time: 20m
        alertname: BackupVerifyDown
        exp_alerts:
          - exp_labels: {severity: critical, job: %[2]s, instance: "a:9847"}
            exp_annotations:
              summary: "backupverify at a:9847 is down"
              description: "Prometheus has failed to scrape backupverify at a:9847 for 5 minutes. While it is down, no backup is verified or drilled, and no other backupverify alert can fire."
              runbook_url: "https://github.com/backupverify/backupverify/blob/main/docs/runbooks.md#backupverifydown"
  - interval: 1m
    input_series:
      - {series: 'up{job="backupverify",instance="b:9847"}', values: '1x30'}
    alert_rule_test:
      - eval_time: 20m
        alertname: BackupVerifyAbsent
        exp_alerts:
          - exp_labels: {severity: critical, job: %[2]s}
            exp_annotations:
              summary: "No backupverify scrape target exists"
              description: "Prometheus has had no target in job \"%[2]s\" for 10 minutes: backups are not being verified, and nothing would say so."
              runbook_url: "https://github.com/backupverify/backupverify/blob/main/docs/runbooks.md#backupverifyabsent"
`, filepath.Join(dir, "alerts.yaml"), job)
	os.WriteFile(filepath.Join(dir, "job_test.yml"), []byte(test), 0o644)
	run(t, "promtool", "test", "rules", filepath.Join(dir, "job_test.yml"))

	for _, bad := range []string{`a"b`, "a/b", "", "-x", "a b"} {
		if bad == "" {
			continue // empty means the default
		}
		if _, out, err := generate(t, bad); err == nil {
			t.Errorf("JOB=%q was accepted:\n%s", bad, out)
		}
	}
}

// One replica down inhibits its own per-target alerts, never another
// replica's: a real Alertmanager with the example config says so.
func TestAlertmanagerInhibitsPerInstance(t *testing.T) {
	am := tool(t, "prometheus-alertmanager")
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(am, "--config.file=alertmanager/alertmanager.yml", "--storage.path="+dir,
		"--web.listen-address="+addr, "--cluster.listen-address=", "--log.level=error")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("alertmanager:\n%s", logs.String())
		}
	})
	api := "http://" + addr + "/api/v2/alerts"
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(api)
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alertmanager did not answer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	alert := func(labels ...string) map[string]any {
		l := map[string]string{"job": "backupverify"}
		for i := 0; i < len(labels); i += 2 {
			l[labels[i]] = labels[i+1]
		}
		return map[string]any{"labels": l, "startsAt": time.Now().Add(-time.Minute).Format(time.RFC3339)}
	}
	body, _ := json.Marshal([]map[string]any{
		alert("alertname", "BackupVerifyDown", "severity", "critical", "instance", "a:9847"),
		alert("alertname", "BackupVerifyRPOExceeded", "severity", "critical", "instance", "a:9847", "target", "crm"),
		alert("alertname", "BackupVerifyRPOExceeded", "severity", "critical", "instance", "b:9847", "target", "crm"),
		alert("alertname", "BackupVerifyChecksumFailed", "severity", "critical", "instance", "b:9847", "target", "crm"),
		alert("alertname", "BackupVerifyDrillFailed", "severity", "critical", "instance", "b:9847", "target", "crm", "phase", "verify"),
		alert("alertname", "BackupVerifyDrillFailed", "severity", "critical", "instance", "b:9847", "target", "billing", "phase", "restore"),
	})
	resp, err := http.Post(api, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST alerts: %s", resp.Status)
	}
	want := map[string]bool{ // alertname/instance/target: inhibited
		"BackupVerifyDown/a:9847/":               false,
		"BackupVerifyRPOExceeded/a:9847/crm":     true,
		"BackupVerifyRPOExceeded/b:9847/crm":     false,
		"BackupVerifyChecksumFailed/b:9847/crm":  false,
		"BackupVerifyDrillFailed/b:9847/crm":     true,
		"BackupVerifyDrillFailed/b:9847/billing": false,
	}
	var got map[string]bool
	// Inhibition is computed when alerts are listed; give it a moment to see the source.
	for range 50 {
		got = map[string]bool{}
		resp, err := http.Get(api)
		if err != nil {
			t.Fatal(err)
		}
		var alerts []struct {
			Labels map[string]string `json:"labels"`
			Status struct {
				InhibitedBy []string `json:"inhibitedBy"`
			} `json:"status"`
		}
		json.NewDecoder(resp.Body).Decode(&alerts)
		resp.Body.Close()
		for _, a := range alerts {
			got[a.Labels["alertname"]+"/"+a.Labels["instance"]+"/"+a.Labels["target"]] = len(a.Status.InhibitedBy) > 0
		}
		if reflect.DeepEqual(got, want) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("inhibited: got %v, want %v", got, want)
}

func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana/backupverify-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
			} `json:"list"`
		} `json:"templating"`
		Annotations struct {
			List []struct {
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	known := map[string]bool{}
	for _, n := range metrics.Names() {
		known[n] = true
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	for _, v := range []string{"job", "namespace", "instance", "target"} {
		if !vars[v] {
			t.Errorf("the dashboard has no $%s variable", v)
		}
	}
	// Every selector narrows to the chosen job, namespace, instance and target
	// (two deployments, or a renamed job, must not mix), and every range is
	// $__rate_interval, which follows the scrape interval and the zoom.
	selector := regexp.MustCompile(`backupverify_[a-z_]+(\{[^}]*\})?`)
	checkExpr := func(where, expr string) {
		for _, m := range selector.FindAllStringSubmatch(expr, -1) {
			for _, v := range []string{"job", "namespace", "instance", "target"} {
				if !strings.Contains(m[1], v+`=~"$`+v+`"`) {
					t.Errorf("%s: %s does not select %s=~\"$%s\"", where, m[0], v, v)
				}
			}
		}
		for _, r := range regexp.MustCompile(`\[[^\]]*\]`).FindAllString(expr, -1) {
			if r != "[$__rate_interval]" {
				t.Errorf("%s: range %s, want [$__rate_interval]", where, r)
			}
		}
	}
	for _, a := range d.Annotations.List {
		checkExpr("annotation", a.Expr)
	}
	used := map[string]bool{}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			checkExpr("panel "+strconv.Quote(p.Title), tg.Expr)
			for _, m := range regexp.MustCompile(`backupverify_[a-z_]+`).FindAllString(tg.Expr, -1) {
				used[m] = true
				if !known[m] {
					t.Errorf("panel %q uses %s, which the daemon does not export", p.Title, m)
				}
			}
		}
	}
	for _, must := range []string{"backupverify_rpo_seconds", "backupverify_rpo_target_seconds", "backupverify_rto_seconds",
		"backupverify_rto_target_seconds", "backupverify_backup_checksum_ok", "backupverify_drill_success",
		"backupverify_drill_phase_seconds", "backupverify_check_value"} {
		if !used[must] {
			t.Errorf("the dashboard does not show %s", must)
		}
	}
}

func TestSystemdUnit(t *testing.T) {
	analyze := tool(t, "systemd-analyze")
	dir := t.TempDir()
	bin := buildDaemon(t, dir)
	unit, err := os.ReadFile("systemd/backupverify.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"User=backupverify", "StateDirectory=backupverify", "ProtectSystem=strict", "NoNewPrivileges=yes",
		"ExecReload=/usr/local/bin/backupverify check-config", "ExecReload=/bin/kill -HUP $MAINPID",
		"RestartPreventExitStatus=2", "ProtectProc=invisible", "ProcSubset=pid"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %s", want)
		}
	}
	// systemd tests RestartPreventExitStatus against the main process only: a
	// config check that fails in ExecStartPre would restart-loop.
	if regexp.MustCompile(`(?m)^ExecStartPre=[^-]`).Match(unit) {
		t.Error("the unit has an ExecStartPre whose failure Restart=on-failure would retry for ever")
	}
	path := filepath.Join(dir, "backupverify.service")
	os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/backupverify", bin)), 0o644)
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestExampleConfigsPassCheckConfig(t *testing.T) {
	dir := t.TempDir()
	bin := buildDaemon(t, dir)
	files, _ := filepath.Glob("examples/*.yml")
	if len(files) < 3 {
		t.Fatalf("want the AWS, S3-compatible and local-folder examples, found %v", files)
	}
	for _, f := range files {
		if filepath.Base(f) == "web-config.yml" {
			continue // --web.config.file's, not a config (daemon's TestTLSExampleWebConfig)
		}
		if out, err := exec.Command(bin, "check-config", "--config", f).CombinedOutput(); err != nil {
			t.Errorf("check-config %s: %v\n%s", f, err, out)
		}
	}
}

// buildDaemon builds the binary in the root module, with its own go.sum.
func buildDaemon(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "backupverify")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/backupverify")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
