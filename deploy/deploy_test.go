// Package deploy_test checks the deployment files: the Kubernetes manifests decode strictly into their typed
// API objects and wire probes, limits and keys correctly; the Envoy ConfigMap is a byte-for-byte copy of
// envoy/sidecar.yaml; and the Prometheus rules and the Grafana dashboard use only metrics documented in
// docs/metrics.md, the single source for metric names.
package deploy_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite kubernetes/envoy-configmap.yaml from ../envoy/sidecar.yaml")

const (
	k8sDir             = "kubernetes"
	sidecarEnvoy       = "../envoy/sidecar.yaml"
	envoyConfigMapFile = "kubernetes/envoy-configmap.yaml"
	envoyConfigMapName = "keygate-envoy"
	metricsDoc         = "../docs/metrics.md"
	rulesFile          = "prometheus/rules.yaml"
	rulesTestFile      = "prometheus/rules_test.yaml"
	dashboardFile      = "grafana/keygate.json"
)

// ---------------------------------------------------------------------------------------------------------------
// Kubernetes

// kustomization is the subset of kustomize's Kustomization this folder uses; decoding is strict, so a field
// outside it fails the test and must be added here on purpose.
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors,omitempty"`
	} `json:"labels"`
	Resources []string `json:"resources"`
	Images    []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images"`
}

// object is one decoded manifest document.
type object struct {
	file string
	kind string
	name string
	obj  any
}

// newTyped returns an empty typed object for an apiVersion/kind this folder may use.
func newTyped(apiVersion, kind string) (any, bool) {
	switch apiVersion + " " + kind {
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, true
	case "v1 Service":
		return &corev1.Service{}, true
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1 Namespace":
		return &corev1.Namespace{}, true
	case "networking.k8s.io/v1 NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, true
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	}
	return nil, false
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeManifests strictly decodes every document of a manifest file into its typed API object.
func decodeManifests(file string, data []byte) ([]object, error) {
	var objs []object
	for i, doc := range docSeparator.Split(string(data), -1) {
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("%s document %d: %w", file, i, err)
		}
		if string(bytes.TrimSpace(js)) == "null" {
			continue // comments only
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return nil, fmt.Errorf("%s document %d: %w", file, i, err)
		}
		typed, ok := newTyped(tm.APIVersion, tm.Kind)
		if !ok {
			return nil, fmt.Errorf("%s document %d: unsupported apiVersion/kind %s %s", file, i, tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), typed); err != nil {
			return nil, fmt.Errorf("%s document %d (%s): %w", file, i, tm.Kind, err)
		}
		name := typed.(metav1.Object).GetName()
		if name == "" {
			return nil, fmt.Errorf("%s document %d (%s): no metadata.name", file, i, tm.Kind)
		}
		objs = append(objs, object{file: file, kind: tm.Kind, name: name, obj: typed})
	}
	return objs, nil
}

func loadKustomization(t *testing.T) kustomization {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	return k
}

func loadManifests(t *testing.T) []object {
	t.Helper()
	k := loadKustomization(t)
	var objs []object
	for _, r := range k.Resources {
		data, err := os.ReadFile(filepath.Join(k8sDir, r))
		if err != nil {
			t.Fatalf("kustomization resource: %v", err)
		}
		o, err := decodeManifests(r, data)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o...)
	}
	return objs
}

func find[T any](objs []object, name string) (T, bool) {
	for _, o := range objs {
		if v, ok := o.obj.(T); ok && o.name == name {
			return v, true
		}
	}
	var zero T
	return zero, false
}

func all[T any](objs []object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	t.Parallel()
	k := loadKustomization(t)
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml is %s %s, want kustomize.config.k8s.io/v1beta1 Kustomization", k.APIVersion, k.Kind)
	}
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		base := filepath.Base(f)
		if base != "kustomization.yaml" && !slices.Contains(k.Resources, base) {
			t.Errorf("%s is not listed in kustomization.yaml resources", base)
		}
	}
	for _, r := range k.Resources {
		if strings.Contains(r, "..") {
			t.Errorf("resource %s leaves the kustomization folder (kustomize's load restrictor rejects it)", r)
		}
	}
}

func TestManifestsDecodeStrictly(t *testing.T) {
	t.Parallel()
	objs := loadManifests(t)
	seen := map[string]string{}
	for _, o := range objs {
		id := o.kind + "/" + o.name
		if prev, dup := seen[id]; dup {
			t.Errorf("%s defined in both %s and %s", id, prev, o.file)
		}
		seen[id] = o.file
	}
	for _, want := range []string{"Deployment/keygate-bundles", "Service/keygate-bundles", "Deployment/identity",
		"ConfigMap/" + envoyConfigMapName} {
		if _, ok := seen[want]; !ok {
			t.Errorf("no %s in the manifests", want)
		}
	}
}

// TestStrictDecodingRejectsMistakes proves decodeManifests fails on the mistakes it exists to catch.
func TestStrictDecodingRejectsMistakes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, doc, wantErr string
	}{
		{"unknown field", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {selectr: {a: b}}\n", "unknown field"},
		{"misplaced field", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: 2, image: nginx}\n", "unknown field"},
		{"wrong type", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: two}\n", "replicas"},
		{"unknown kind", "apiVersion: v1\nkind: Sekret\nmetadata: {name: x}\n", "unsupported"},
		{"duplicate key", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b, a: c}\n", "already set"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := decodeManifests("test.yaml", []byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestPodsHaveProbesLimitsAndGoRuntimeSettings(t *testing.T) {
	t.Parallel()
	objs := loadManifests(t)
	deployments := all[*appsv1.Deployment](objs)
	if len(deployments) == 0 {
		t.Fatal("no Deployments")
	}
	for _, d := range deployments {
		for _, c := range d.Spec.Template.Spec.Containers {
			t.Run(d.Name+"/"+c.Name, func(t *testing.T) {
				t.Parallel()
				if c.ReadinessProbe == nil {
					t.Error("no readinessProbe")
				}
				if c.LivenessProbe == nil {
					t.Error("no livenessProbe")
				}
				for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					if _, ok := c.Resources.Requests[res]; !ok {
						t.Errorf("no resources.requests.%s", res)
					}
					if _, ok := c.Resources.Limits[res]; !ok {
						t.Errorf("no resources.limits.%s", res)
					}
				}
				if c.SecurityContext == nil || c.SecurityContext.AllowPrivilegeEscalation == nil ||
					*c.SecurityContext.AllowPrivilegeEscalation {
					t.Error("securityContext.allowPrivilegeEscalation must be false")
				}
				if !strings.Contains(c.Image, "keygate") {
					return
				}
				// keygate is a Go binary: its runtime must see the container's limits, not the node's size.
				for env, res := range map[string]string{"GOMAXPROCS": "limits.cpu", "GOMEMLIMIT": "limits.memory"} {
					ev := envVar(c, env)
					if ev == nil || ev.ValueFrom == nil || ev.ValueFrom.ResourceFieldRef == nil {
						t.Errorf("%s is not set from resourceFieldRef", env)
						continue
					}
					ref := ev.ValueFrom.ResourceFieldRef
					if ref.Resource != res {
						t.Errorf("%s comes from %s, want %s", env, ref.Resource, res)
					}
					if ref.ContainerName != "" && ref.ContainerName != c.Name {
						t.Errorf("%s comes from container %s, want its own", env, ref.ContainerName)
					}
					if !ref.Divisor.IsZero() && ref.Divisor.String() != "1" {
						t.Errorf("%s divisor is %s, want 1 (GOMEMLIMIT is in bytes)", env, ref.Divisor.String())
					}
				}
			})
		}
	}
}

func TestSidecarPodWiring(t *testing.T) {
	t.Parallel()
	objs := loadManifests(t)
	d, ok := find[*appsv1.Deployment](objs, "identity")
	if !ok {
		t.Fatal("no Deployment identity")
	}
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 3 {
		t.Errorf("identity pod has %d containers, want 3 (app, envoy, keygate)", len(pod.Containers))
	}
	keygate := container(t, pod, "keygate")
	envoy := container(t, pod, "envoy")

	if len(keygate.Args) == 0 || keygate.Args[0] != "authz" {
		t.Fatalf("keygate container args = %v, want authz ...", keygate.Args)
	}
	if p := httpPath(keygate.ReadinessProbe); p != "/health?bundles" {
		t.Errorf("keygate readinessProbe path = %q, want /health?bundles", p)
	}
	if p := httpPath(keygate.StartupProbe); keygate.StartupProbe != nil && p != "/health?bundles" {
		t.Errorf("keygate startupProbe path = %q, want /health?bundles", p)
	}
	if p := httpPath(keygate.LivenessProbe); p != "/health" {
		t.Errorf("keygate livenessProbe path = %q, want /health (a stale bundle must not restart the sidecar)", p)
	}
	checkProbePorts(t, keygate)
	checkProbePorts(t, envoy)

	// --bundle-url names the bundle server's Service and port.
	bundleURL := flagValue(keygate.Args, "--bundle-url")
	u, err := url.Parse(bundleURL)
	if err != nil || u.Scheme != "http" || u.Path != "/bundles/keygate.tar.gz" {
		t.Fatalf("--bundle-url = %q, want http://<bundle server Service>:<port>/bundles/keygate.tar.gz", bundleURL)
	}
	svcName, _, _ := strings.Cut(u.Hostname(), ".")
	svc, ok := find[*corev1.Service](objs, svcName)
	if !ok {
		t.Fatalf("--bundle-url host %s is not a Service in the manifests", u.Hostname())
	}
	port, _ := strconv.Atoi(u.Port())
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return int(p.Port) == port }) {
		t.Errorf("--bundle-url port %d is not a port of Service %s", port, svcName)
	}
	if !selects(svc, "keygate-bundles", objs) {
		t.Errorf("Service %s does not select the bundle server pods", svcName)
	}

	// Envoy only reaches keygate over loopback; the HTTP port must be reachable by kubelet probes.
	if got := flagValue(keygate.Args, "--grpc-addr"); got != "" && !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("--grpc-addr = %q, want loopback (only Envoy in the pod calls it)", got)
	}
	if host, _, _ := net.SplitHostPort(flagValue(keygate.Args, "--http-addr")); host == "127.0.0.1" || host == "localhost" {
		t.Error("--http-addr is loopback: kubelet probes and Prometheus cannot reach it")
	}

	// Key and config files named on command lines live in mounted volumes backed by objects in the manifests.
	checkFileMounted(t, objs, pod, keygate, flagValue(keygate.Args, "--verification-key"))
	envoyConfig := flagValue(envoy.Args, "-c")
	checkFileMounted(t, objs, pod, envoy, envoyConfig)
	checkFileMounted(t, objs, pod, envoy, "/etc/keygate/jwks/jwks.json") // local_jwks in envoy/sidecar.yaml
	if vol := volumeFor(pod, envoy, envoyConfig); vol == nil || vol.ConfigMap == nil || vol.ConfigMap.Name != envoyConfigMapName {
		t.Errorf("envoy's -c %s is not from ConfigMap %s", envoyConfig, envoyConfigMapName)
	}

	// The Service sends traffic to Envoy, never straight to the app or keygate.
	svc, ok = find[*corev1.Service](objs, "identity")
	if !ok {
		t.Fatal("no Service identity")
	}
	for _, p := range svc.Spec.Ports {
		if c := containerWithPort(pod, p.TargetPort.String(), int32(p.TargetPort.IntValue())); c != "envoy" {
			t.Errorf("Service identity port %d targets container %q, want envoy", p.Port, c)
		}
	}
}

func TestBundleServerWiring(t *testing.T) {
	t.Parallel()
	objs := loadManifests(t)
	d, ok := find[*appsv1.Deployment](objs, "keygate-bundles")
	if !ok {
		t.Fatal("no Deployment keygate-bundles")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("keygate-bundles replicas = %v, want at least 2", d.Spec.Replicas)
	}
	pod := d.Spec.Template.Spec
	c := container(t, pod, "keygate")
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("args = %v, want serve ...", c.Args)
	}
	if p := httpPath(c.ReadinessProbe); p != "/health" {
		t.Errorf("readinessProbe path = %q, want /health", p)
	}
	checkProbePorts(t, c)
	if slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--database-url") }) {
		t.Error("the database URL is on the command line; it belongs in KEYGATE_DATABASE_URL from a Secret")
	}
	ev := envVar(c, "KEYGATE_DATABASE_URL")
	if ev == nil || ev.Value != "" || ev.ValueFrom == nil || ev.ValueFrom.SecretKeyRef == nil {
		t.Error("KEYGATE_DATABASE_URL is not set from a Secret")
	}
	key := flagValue(c.Args, "--signing-key")
	if vol := volumeFor(pod, c, key); vol == nil || vol.Secret == nil {
		t.Errorf("--signing-key %q is not in a volume from a Secret", key)
	}
	svc, ok := find[*corev1.Service](objs, "keygate-bundles")
	if !ok {
		t.Fatal("no Service keygate-bundles")
	}
	for _, p := range svc.Spec.Ports {
		if containerWithPort(pod, p.TargetPort.String(), int32(p.TargetPort.IntValue())) != "keygate" {
			t.Errorf("Service keygate-bundles port %d does not target the keygate container", p.Port)
		}
	}
}

// TestEnvoyConfigMap keeps the ConfigMap's envoy.yaml identical to envoy/sidecar.yaml (which envoy/envoy_test.go
// validates as a Bootstrap). Run with -update to regenerate the ConfigMap after editing envoy/sidecar.yaml.
func TestEnvoyConfigMap(t *testing.T) {
	sidecar, err := os.ReadFile(sidecarEnvoy)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(envoyConfigMapFile, renderEnvoyConfigMap(sidecar), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(envoyConfigMapFile)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeManifests(envoyConfigMapFile, data)
	if err != nil {
		t.Fatal(err)
	}
	cm, ok := find[*corev1.ConfigMap](objs, envoyConfigMapName)
	if !ok {
		t.Fatalf("%s has no ConfigMap %s", envoyConfigMapFile, envoyConfigMapName)
	}
	if got := cm.Data["envoy.yaml"]; got != string(sidecar) {
		t.Fatalf("ConfigMap %s envoy.yaml differs from %s; run: go test ./deploy/... -run TestEnvoyConfigMap -update",
			envoyConfigMapName, sidecarEnvoy)
	}
}

func renderEnvoyConfigMap(sidecar []byte) []byte {
	var b bytes.Buffer
	b.WriteString(`# Generated from envoy/sidecar.yaml, byte for byte (kustomize cannot load files outside this folder).
# Do not edit here: edit envoy/sidecar.yaml and run  go test ./deploy/... -run TestEnvoyConfigMap -update
apiVersion: v1
kind: ConfigMap
metadata:
  name: ` + envoyConfigMapName + `
data:
  envoy.yaml: |
`)
	for _, line := range strings.SplitAfter(string(sidecar), "\n") {
		if strings.TrimSpace(line) != "" {
			b.WriteString("    ")
		}
		b.WriteString(line)
	}
	return b.Bytes()
}

func container(t *testing.T, pod corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range pod.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

func envVar(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// flagValue returns the value of --name=value or "--name value" (also -c value) in args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func httpPath(p *corev1.Probe) string {
	if p == nil || p.HTTPGet == nil {
		return ""
	}
	return p.HTTPGet.Path
}

// checkProbePorts requires every HTTP probe port to be one the container declares.
func checkProbePorts(t *testing.T, c corev1.Container) {
	t.Helper()
	for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
		if p == nil || p.HTTPGet == nil {
			continue
		}
		pod := corev1.PodSpec{Containers: []corev1.Container{c}}
		if containerWithPort(pod, p.HTTPGet.Port.String(), int32(p.HTTPGet.Port.IntValue())) != c.Name {
			t.Errorf("container %s probes port %s, which it does not declare", c.Name, p.HTTPGet.Port.String())
		}
	}
}

// containerWithPort returns the container declaring a port by name or number.
func containerWithPort(pod corev1.PodSpec, name string, number int32) string {
	for _, c := range pod.Containers {
		for _, p := range c.Ports {
			if p.Name == name || (number != 0 && p.ContainerPort == number) {
				return c.Name
			}
		}
	}
	return ""
}

// volumeFor returns the pod volume mounted at the directory holding file in container c.
func volumeFor(pod corev1.PodSpec, c corev1.Container, file string) *corev1.Volume {
	if file == "" {
		return nil
	}
	for _, m := range c.VolumeMounts {
		if path.Dir(file) == path.Clean(m.MountPath) {
			for i := range pod.Volumes {
				if pod.Volumes[i].Name == m.Name {
					return &pod.Volumes[i]
				}
			}
		}
	}
	return nil
}

// checkFileMounted requires file to come from a ConfigMap in the manifests holding that key, or from a Secret
// (created out of band, see deploy/README.md).
func checkFileMounted(t *testing.T, objs []object, pod corev1.PodSpec, c corev1.Container, file string) {
	t.Helper()
	vol := volumeFor(pod, c, file)
	switch {
	case file == "":
		t.Errorf("container %s: a file flag is missing", c.Name)
	case vol == nil:
		t.Errorf("container %s: %s is not in a mounted volume", c.Name, file)
	case vol.Secret != nil:
	case vol.ConfigMap != nil:
		cm, ok := find[*corev1.ConfigMap](objs, vol.ConfigMap.Name)
		if !ok {
			t.Errorf("container %s: %s comes from ConfigMap %s, not in the manifests", c.Name, file, vol.ConfigMap.Name)
			return
		}
		key := path.Base(file)
		for _, it := range vol.ConfigMap.Items {
			if it.Path == key {
				key = it.Key
			}
		}
		if _, ok := cm.Data[key]; !ok {
			t.Errorf("container %s: ConfigMap %s has no key %s for %s", c.Name, cm.Name, key, file)
		}
	default:
		t.Errorf("container %s: %s is in volume %s, neither a ConfigMap nor a Secret", c.Name, file, vol.Name)
	}
}

// selects reports whether the Service's selector matches the pod template of the named Deployment.
func selects(svc *corev1.Service, deployment string, objs []object) bool {
	d, ok := find[*appsv1.Deployment](objs, deployment)
	if !ok || len(svc.Spec.Selector) == 0 {
		return false
	}
	for k, v := range svc.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------------------------------------------------------
// Metrics: docs/metrics.md is the single source of names, types and label sets.

type metricDoc struct {
	typ    string
	labels map[string][]string // label -> closed set of values (nil: any value)
}

var (
	tableRow     = regexp.MustCompile("^\\|\\s*`(keygate_[a-z0-9_]+)`\\s*\\|([^|]*)\\|([^|]*)\\|")
	docLabel     = regexp.MustCompile("`([a-z_]+)`(?:\\s*=\\s*([^;`]*))?")
	closedValues = regexp.MustCompile(`^[a-zA-Z0-9_.+]+(?:\s*,\s*[a-zA-Z0-9_.+]+)*$`)
)

func parseMetricsDoc(t *testing.T) map[string]metricDoc {
	t.Helper()
	data, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]metricDoc{}
	for _, line := range strings.Split(string(data), "\n") {
		m := tableRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		md := metricDoc{typ: strings.Fields(m[2])[0], labels: map[string][]string{}}
		for _, l := range docLabel.FindAllStringSubmatch(m[3], -1) {
			var values []string
			if v := strings.TrimSpace(l[2]); closedValues.MatchString(v) {
				for _, s := range strings.Split(v, ",") {
					values = append(values, strings.TrimSpace(s))
				}
			}
			md.labels[l[1]] = values
		}
		docs[m[1]] = md
	}
	if len(docs) < 10 {
		t.Fatalf("parsed only %d metrics from %s; has its table format changed?", len(docs), metricsDoc)
	}
	return docs
}

var (
	metricRef = regexp.MustCompile(`(keygate_[a-z0-9_]+)(\{[^}]*\})?`)
	matcher   = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	grouping  = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

// targetLabels are added by Prometheus's scrape and service discovery, not by keygate.
var targetLabels = []string{"job", "instance", "namespace", "pod", "container", "service"}

// checkExpr returns the problems with one PromQL expression against the documented metrics.
func checkExpr(docs map[string]metricDoc, expr string) []string {
	var problems []string
	labelsInExpr := map[string]bool{}
	for _, ref := range metricRef.FindAllStringSubmatch(expr, -1) {
		name, base, suffix := ref[1], ref[1], ""
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, s); ok && docs[b].typ == "histogram" {
				base, suffix = b, s
			}
		}
		md, ok := docs[base]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s is not in %s", name, metricsDoc))
			continue
		}
		if md.typ == "histogram" && suffix == "" {
			problems = append(problems, fmt.Sprintf("%s is a histogram: use %s_bucket, _sum or _count", name, name))
		}
		for l := range md.labels {
			labelsInExpr[l] = true
		}
		if suffix == "_bucket" {
			labelsInExpr["le"] = true
		}
		for _, mm := range matcher.FindAllStringSubmatch(ref[2], -1) {
			label, op, value := mm[1], mm[2], mm[3]
			if slices.Contains(targetLabels, label) || (label == "le" && suffix == "_bucket") {
				continue
			}
			values, ok := md.labels[label]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("%s has no label %s", name, label))
			case values != nil && (op == "=" || op == "!=") && !slices.Contains(values, value):
				problems = append(problems, fmt.Sprintf("%s{%s} is not one of the documented values %v", name, label, values))
			}
		}
	}
	for _, g := range grouping.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(g[1], ",") {
			l = strings.TrimSpace(l)
			if l != "" && !labelsInExpr[l] && !slices.Contains(targetLabels, l) {
				problems = append(problems, fmt.Sprintf("grouping by %s, a label no metric in the expression has", l))
			}
		}
	}
	return problems
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Record      string            `json:"record"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.UnmarshalStrict(data, &rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return rf
}

// dashboardExprs returns every PromQL expression in the dashboard: panel targets (rows included) and
// template variable queries.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		ID      int     `json:"id"`
		Title   string  `json:"title"`
		Type    string  `json:"type"`
		Panels  []panel `json:"panels"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	}
	var dash struct {
		UID        string  `json:"uid"`
		Title      string  `json:"title"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Errorf("%s: the dashboard needs a uid and a title", dashboardFile)
	}
	exprs := map[string]string{}
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d is used twice", dashboardFile, p.ID)
			}
			ids[p.ID] = true
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no targets", dashboardFile, p.Title)
			}
			for i, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: panel %q target %d has no expr", dashboardFile, p.Title, i)
				}
				exprs[fmt.Sprintf("panel %q target %d", p.Title, i)] = tg.Expr
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var s string
			if err := json.Unmarshal(v.Query, &s); err != nil {
				t.Errorf("%s: variable %s: unreadable query %s", dashboardFile, v.Name, v.Query)
			}
			q.Query = s
		}
		exprs["variable "+v.Name] = q.Query
	}
	return exprs
}

func TestRulesAndDashboardUseDocumentedMetrics(t *testing.T) {
	t.Parallel()
	docs := parseMetricsDoc(t)
	exprs := dashboardExprs(t)
	onDashboard := map[string]bool{}
	for where, e := range exprs {
		for _, p := range checkExpr(docs, e) {
			t.Errorf("%s %s: %s", dashboardFile, where, p)
		}
		for _, ref := range metricRef.FindAllStringSubmatch(e, -1) {
			onDashboard[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(ref[1], "_bucket"), "_count"), "_sum")] = true
		}
	}
	for name := range docs {
		if !onDashboard[name] {
			t.Errorf("%s: documented metric %s is on no panel", dashboardFile, name)
		}
	}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			for _, p := range checkExpr(docs, r.Expr) {
				t.Errorf("%s %s%s: %s", rulesFile, r.Alert, r.Record, p)
			}
		}
	}
}

// TestCheckExprCatchesMistakes proves the metric check fails on the drift it exists to catch.
func TestCheckExprCatchesMistakes(t *testing.T) {
	t.Parallel()
	docs := parseMetricsDoc(t)
	tests := []struct {
		name, expr, wantErr string
	}{
		{"undocumented name", `rate(keygate_checks_total[5m])`, "not in"},
		{"histogram without suffix", `keygate_check_duration_seconds > 1`, "is a histogram"},
		{"unknown suffix of a counter", `keygate_decisions_total_count`, "not in"},
		{"undocumented label", `keygate_decisions_total{user="u1"}`, "no label user"},
		{"value outside the closed set", `keygate_decisions_total{result="denied"}`, "documented values"},
		{"grouping by an unknown label", `sum by (org) (rate(keygate_decisions_total[5m]))`, "grouping by org"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			problems := checkExpr(docs, tc.expr)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.wantErr) }) {
				t.Fatalf("problems = %q, want one containing %q", problems, tc.wantErr)
			}
		})
	}
	if p := checkExpr(docs, `histogram_quantile(0.99, sum by (job, le) (rate(keygate_check_duration_seconds_bucket{result="allow"}[5m])))`); len(p) != 0 {
		t.Errorf("a valid expression was flagged: %q", p)
	}
}

func TestAlertsAreCompleteAndUnitTested(t *testing.T) {
	t.Parallel()
	rf := loadRules(t)
	testData, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var rt struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(testData, &rt); err != nil {
		t.Fatalf("%s: %v", rulesTestFile, err)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range rt.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
	}
	alerts := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts[r.Alert] = true
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
			}
			if r.For == "" {
				t.Errorf("%s: no for: a single bad scrape would page", r.Alert)
			}
			for _, a := range []string{"summary", "description"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			if !fires[r.Alert] || !silent[r.Alert] {
				t.Errorf("%s: %s must test it both firing and silent (fires: %v, silent: %v)",
					r.Alert, rulesTestFile, fires[r.Alert], silent[r.Alert])
			}
		}
	}
	for _, want := range []string{"KeygateBundleStale", "KeygateBundleActivationFailures", "KeygateDenyRateSpike",
		"KeygateCheckErrors", "KeygateCheckLatencyHigh", "KeygateDatabaseUnreachable", "KeygateBuildFailing",
		"KeygateBundleServerErrors"} {
		if !alerts[want] {
			t.Errorf("%s: no alert %s", rulesFile, want)
		}
	}
}

// TestDocumentedMetricsAreExported closes the chain rules/panels -> docs/metrics.md -> binaries: every metric
// the binaries register (their Name: "keygate_..." options) is documented, and every documented one is registered.
func TestDocumentedMetricsAreExported(t *testing.T) {
	docs := parseMetricsDoc(t)
	name := regexp.MustCompile(`(?:Name:\s*|NewDesc\()"(keygate_[a-z0-9_]+)"`)
	exported := map[string]string{}
	for _, src := range []string{"../internal/sidecar/metrics.go", "../internal/bundleserver/metrics.go"} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range name.FindAllStringSubmatch(string(data), -1) {
			exported[m[1]] = src
		}
	}
	for n, src := range exported {
		if _, ok := docs[n]; !ok {
			t.Errorf("%s registers %s, which docs/metrics.md does not document", src, n)
		}
	}
	for n := range docs {
		if _, ok := exported[n]; !ok {
			t.Errorf("docs/metrics.md documents %s, which no binary registers", n)
		}
	}
}
