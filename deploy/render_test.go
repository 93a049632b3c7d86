package deploy_test

// The rendered manifests (kubectl kustomize), checked against the binary and the image: what Kubernetes would
// actually apply, not the files one by one.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/keygate/keygate/internal/bundleserver"
	"github.com/keygate/keygate/internal/catalog"
	"github.com/keygate/keygate/internal/compiler"
	"github.com/keygate/keygate/internal/model"
	"github.com/keygate/keygate/internal/sidecar"
)

const (
	monitoringOverlay = "kubernetes-with-servicemonitor"
	dockerfile        = "../Dockerfile"
	makefile          = "../Makefile"
	readme            = "../README.md"
)

// rendered is the output of kubectl kustomize: typed objects, and the documents no typed decoder knows (the
// Prometheus Operator's) as unstructured maps.
type rendered struct {
	objs         []object
	unstructured []map[string]any
}

// kustomize renders dir with kubectl kustomize. It skips without kubectl, except under CI.
func kustomize(t *testing.T, dir string) rendered {
	t.Helper()
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("kubectl is not on PATH; under CI the rendered manifests must be checked")
		}
		t.Skip("kubectl is not on PATH: skipping the kubectl kustomize render test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, kubectl, "kustomize", dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
	}
	var r rendered
	for i, doc := range docSeparator.Split(string(out), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var u map[string]any
		if err := yaml.Unmarshal([]byte(doc), &u); err != nil {
			t.Fatalf("kustomize output document %d: %v", i, err)
		}
		if apiVersion, _ := u["apiVersion"].(string); strings.HasPrefix(apiVersion, "monitoring.coreos.com/") {
			r.unstructured = append(r.unstructured, u)
			continue
		}
		objs, err := decodeManifests(fmt.Sprintf("kustomize %s", dir), []byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		r.objs = append(r.objs, objs...)
	}
	return r
}

func keygateContainers(objs []object) map[string]corev1.Container {
	out := map[string]corev1.Container{}
	for _, d := range all[*appsv1.Deployment](objs) {
		for _, c := range d.Spec.Template.Spec.Containers {
			if strings.Contains(c.Image, "/keygate/keygate") {
				out[d.Name+"/"+c.Name] = c
			}
		}
	}
	return out
}

// makeVar reads NAME ?= VALUE (or :=, =) from the Makefile.
func makeVar(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(makefile)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + name + `\s*[?:]?=\s*(\S+)`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("no %s in %s", name, makefile)
	}
	return string(m[1])
}

// TestKustomizeRenderImages: every keygate container runs the image `make image` builds (Makefile IMAGE), at
// the tag the kustomization pins; no image is untagged or :latest.
func TestKustomizeRenderImages(t *testing.T) {
	t.Parallel()
	image := makeVar(t, "IMAGE")
	k := loadKustomization(t)
	var tag string
	for _, im := range k.Images {
		if im.Name == image {
			tag = im.NewTag
		}
	}
	if tag == "" {
		t.Fatalf("kustomization.yaml images has no newTag for %s (the Makefile's IMAGE)", image)
	}
	r := kustomize(t, k8sDir)
	cs := keygateContainers(r.objs)
	if len(cs) < 3 {
		t.Fatalf("only %d keygate containers rendered", len(cs))
	}
	for where, c := range cs {
		if c.Image != image+":"+tag {
			t.Errorf("%s runs %s, want %s:%s", where, c.Image, image, tag)
		}
	}
	for _, d := range all[*appsv1.Deployment](r.objs) {
		for _, c := range d.Spec.Template.Spec.Containers {
			name, ref, ok := strings.Cut(c.Image[strings.LastIndex(c.Image, "/")+1:], ":")
			if !ok || ref == "" || ref == "latest" {
				t.Errorf("%s/%s: image %s has no pinned tag (%s)", d.Name, c.Name, c.Image, name)
			}
		}
	}
}

// listener is one address flag of a keygate subcommand, with its default (keygate serve --help / authz --help).
type listener struct{ flag, def string }

var listeners = map[string][]listener{
	"serve": {{"--addr", bundleserver.DefaultAddr}},
	"authz": {{"--grpc-addr", "127.0.0.1:9191"}, {"--http-addr", "127.0.0.1:8181"}},
}

// TestKustomizeRenderPortsMatchFlags: each keygate container declares exactly the ports its listener flags
// open on the pod network (a loopback listener is declared nowhere: nothing outside the pod can reach it).
func TestKustomizeRenderPortsMatchFlags(t *testing.T) {
	t.Parallel()
	r := kustomize(t, k8sDir)
	for where, c := range keygateContainers(r.objs) {
		sub := c.Args[0]
		ls, ok := listeners[sub]
		if !ok {
			t.Errorf("%s: subcommand %q has no listener table here", where, sub)
			continue
		}
		open := map[int32]string{}
		for _, l := range ls {
			addr := flagValue(c.Args, l.flag)
			if addr == "" {
				addr = l.def
			}
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				t.Errorf("%s: %s=%q: %v", where, l.flag, addr, err)
				continue
			}
			n, _ := strconv.Atoi(port)
			if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
				if slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.ContainerPort == int32(n) }) {
					t.Errorf("%s: port %d is declared but %s listens on loopback (%s)", where, n, l.flag, addr)
				}
				continue
			}
			open[int32(n)] = l.flag
		}
		for n, flag := range open {
			if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.ContainerPort == n }) {
				t.Errorf("%s: %s listens on %d, which the container does not declare", where, flag, n)
			}
		}
		for _, p := range c.Ports {
			if _, ok := open[p.ContainerPort]; !ok {
				t.Errorf("%s: declares port %s/%d, which no listener flag opens", where, p.Name, p.ContainerPort)
			}
		}
	}
}

// probeTargets starts the real bundle server and sidecar (on loopback, the embedded demo, a file bundle) and
// returns the base URL of the HTTP listener each subcommand's probes reach.
func probeTargets(t *testing.T) map[string]string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv, err := bundleserver.New(bundleserver.Config{Addr: "127.0.0.1:0",
		Source: func(context.Context) (model.Snapshot, error) { return catalog.DemoWithRoutes() }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(ctx) }()

	m, err := catalog.DemoModel()
	if err != nil {
		t.Fatal(err)
	}
	b, err := compiler.Build(m, compiler.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bundleFile := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(bundleFile, b.Data, 0o644); err != nil {
		t.Fatal(err)
	}
	sc, err := sidecar.New(ctx, sidecar.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Bundle: sidecar.BundleConfig{File: bundleFile}, IdentityFromMetadata: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	scDone := make(chan error, 1)
	go func() { scDone <- sc.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-srvDone
		<-scDone
	})
	deadline := time.Now().Add(30 * time.Second)
	for !srv.Ready() || !sc.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("bundle server or sidecar not ready after 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return map[string]string{"serve": "http://" + srv.Addr().String(), "authz": "http://" + sc.HTTPAddr().String()}
}

// TestKustomizeRenderProbesExistOnTheBinary: every HTTP probe of a keygate container targets the port of the
// listener serving HTTP (serve --addr, authz --http-addr), and its path answers 200 on the real server once a
// bundle is active.
func TestKustomizeRenderProbesExistOnTheBinary(t *testing.T) {
	t.Parallel()
	r := kustomize(t, k8sDir)
	targets := probeTargets(t)
	httpFlag := map[string]listener{"serve": listeners["serve"][0], "authz": listeners["authz"][1]}
	for where, c := range keygateContainers(r.objs) {
		sub := c.Args[0]
		l := httpFlag[sub]
		addr := cmpOr(flagValue(c.Args, l.flag), l.def)
		_, port, _ := net.SplitHostPort(addr)
		for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
			if p == nil {
				continue
			}
			if p.HTTPGet == nil {
				t.Errorf("%s %sProbe is not an httpGet", where, name)
				continue
			}
			probePort := p.HTTPGet.Port.String()
			for _, cp := range c.Ports {
				if cp.Name == probePort {
					probePort = strconv.Itoa(int(cp.ContainerPort))
				}
			}
			if probePort != port {
				t.Errorf("%s %sProbe targets port %s, but %s serves HTTP on %s", where, name, p.HTTPGet.Port.String(), l.flag, port)
			}
			resp, err := http.Get(targets[sub] + p.HTTPGet.Path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s %sProbe GET %s: keygate %s answers %d, want 200", where, name, p.HTTPGet.Path, sub, resp.StatusCode)
			}
		}
	}
	// The probe really distinguishes: an unknown path is not 200.
	if resp, err := http.Get(targets["serve"] + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("GET /healthz answers 200 on the bundle server; the probe check cannot fail")
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

var createSecret = regexp.MustCompile(`create secret generic (\S+)((?: --from-(?:literal|file)=[^=\s]+=\S+)+)`)

// documentedSecrets returns, per file, the Secrets (and their keys) its `kubectl create secret generic` lines
// create.
func documentedSecrets(t *testing.T, file string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, m := range createSecret.FindAllStringSubmatch(string(data), -1) {
		for _, f := range regexp.MustCompile(`--from-(?:literal|file)=([^=\s]+)=`).FindAllStringSubmatch(m[2], -1) {
			out[m[1]] = append(out[m[1]], f[1])
		}
	}
	return out
}

// TestKustomizeRenderReferencesExist: every Secret a rendered pod reads (env secretKeyRef, secret volume
// holding a file a flag names) is created, with that key, by the commands in README.md and in
// kustomization.yaml's header (Secrets are never in the repository); every ConfigMap is rendered, with the key.
func TestKustomizeRenderReferencesExist(t *testing.T) {
	t.Parallel()
	r := kustomize(t, k8sDir)
	docs := map[string]map[string][]string{
		readme: documentedSecrets(t, readme),
		filepath.Join(k8sDir, "kustomization.yaml"): documentedSecrets(t, filepath.Join(k8sDir, "kustomization.yaml")),
	}
	need := map[string]bool{} // "secret/key"
	for _, d := range all[*appsv1.Deployment](r.objs) {
		pod := d.Spec.Template.Spec
		for _, c := range pod.Containers {
			for _, ev := range c.Env {
				if ev.ValueFrom != nil && ev.ValueFrom.SecretKeyRef != nil {
					need[ev.ValueFrom.SecretKeyRef.Name+"/"+ev.ValueFrom.SecretKeyRef.Key] = true
				}
			}
			for _, a := range c.Args {
				_, file, ok := strings.Cut(a, "=")
				if !ok || !strings.HasPrefix(file, "/") {
					continue
				}
				vol := volumeFor(pod, c, file)
				switch {
				case vol == nil:
				case vol.Secret != nil:
					need[vol.Secret.SecretName+"/"+path.Base(file)] = true
				case vol.ConfigMap != nil:
					cm, ok := find[*corev1.ConfigMap](r.objs, vol.ConfigMap.Name)
					if !ok {
						t.Errorf("%s/%s: %s comes from ConfigMap %s, which is not rendered", d.Name, c.Name, file, vol.ConfigMap.Name)
					} else if _, ok := cm.Data[path.Base(file)]; !ok {
						t.Errorf("%s/%s: ConfigMap %s has no key %s", d.Name, c.Name, cm.Name, path.Base(file))
					}
				}
			}
		}
	}
	if len(need) < 2 {
		t.Fatalf("only %d secret references found: %v", len(need), need)
	}
	for ref := range need {
		name, key, _ := strings.Cut(ref, "/")
		for file, secrets := range docs {
			if !slices.Contains(secrets[name], key) {
				t.Errorf("the pods read Secret %s key %s, which %s does not create (kubectl create secret generic %s --from-...=%s=...)",
					name, key, file, name, key)
			}
		}
	}
}

// TestKustomizeRenderKeyAlgorithms: the bundle verification key the sidecars mount is parsed, and the algorithm
// the sidecar picks for it (no --verification-alg in the manifests, or the one given) is the one keygate serve
// signs with for a private key of that type; the JWKS key is consistent with its alg.
func TestKustomizeRenderKeyAlgorithms(t *testing.T) {
	t.Parallel()
	r := kustomize(t, k8sDir)
	checked := 0
	for where, c := range keygateContainers(r.objs) {
		if c.Args[0] != "authz" {
			continue
		}
		file := flagValue(c.Args, "--verification-key")
		if file == "" {
			t.Errorf("%s: no --verification-key: bundles would be accepted unsigned", where)
			continue
		}
		var cm *corev1.ConfigMap
		for _, d := range all[*appsv1.Deployment](r.objs) {
			if !strings.HasPrefix(where, d.Name+"/") {
				continue
			}
			if vol := volumeFor(d.Spec.Template.Spec, c, file); vol != nil && vol.ConfigMap != nil {
				cm, _ = find[*corev1.ConfigMap](r.objs, vol.ConfigMap.Name)
			}
		}
		if cm == nil {
			t.Errorf("%s: %s is not from a rendered ConfigMap", where, file)
			continue
		}
		pub := []byte(cm.Data[path.Base(file)])
		block, _ := pem.Decode(pub)
		if block == nil {
			t.Fatalf("%s: %s is not PEM", where, file)
		}
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			t.Fatalf("%s: %s: %v", where, file, err)
		}
		var priv any
		switch k := key.(type) {
		case *ecdsa.PublicKey:
			if k.Curve != elliptic.P256() {
				t.Errorf("%s: EC key on %s; keygate serve signs ES256, which needs P-256", where, k.Curve.Params().Name)
			}
			priv, err = ecdsa.GenerateKey(k.Curve, rand.Reader)
		case *rsa.PublicKey:
			priv, err = rsa.GenerateKey(rand.Reader, k.N.BitLen())
		default:
			t.Fatalf("%s: %s holds a %T, which keygate cannot verify bundles with", where, file, key)
		}
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		signer := compiler.Options{SigningKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})}
		if err := signer.Validate(); err != nil {
			t.Fatal(err)
		}
		alg := cmpOr(flagValue(c.Args, "--verification-alg"), sidecar.DefaultVerificationAlg(pub))
		if alg != signer.SigningAlg {
			t.Errorf("%s: the sidecar verifies with %s, keygate serve signs a %T's bundles with %s: every bundle would be refused",
				where, alg, key, signer.SigningAlg)
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no sidecar verification key checked")
	}

	jwksCM, ok := find[*corev1.ConfigMap](r.objs, "keygate-jwks")
	if !ok {
		t.Fatal("no ConfigMap keygate-jwks")
	}
	var jwks struct {
		Keys []struct{ Kty, Crv, Alg string } `json:"keys"`
	}
	if err := json.Unmarshal([]byte(jwksCM.Data["jwks.json"]), &jwks); err != nil || len(jwks.Keys) == 0 {
		t.Fatalf("keygate-jwks jwks.json: %v", err)
	}
	for _, k := range jwks.Keys {
		want := map[string]string{"ES256": "EC/P-256", "ES384": "EC/P-384", "RS256": "RSA/"}[k.Alg]
		if got := k.Kty + "/" + k.Crv; want == "" || got != want {
			t.Errorf("JWKS key %s/%s declares alg %s", k.Kty, k.Crv, k.Alg)
		}
	}
}

// TestServiceMonitorsMatchTheServices: the optional Prometheus Operator component renders, and each
// ServiceMonitor selects a Service by its labels and names one of its ports; each PodMonitor selects pods
// declaring its port; every path is /metrics.
func TestServiceMonitorsMatchTheServices(t *testing.T) {
	t.Parallel()
	r := kustomize(t, monitoringOverlay)
	base := kustomize(t, k8sDir)
	if len(r.objs) != len(base.objs) {
		t.Errorf("the overlay renders %d objects besides its monitors, the base %d", len(r.objs), len(base.objs))
	}
	kinds := map[string]int{}
	for _, u := range r.unstructured {
		kind, _ := u["kind"].(string)
		kinds[kind]++
		meta, _ := u["metadata"].(map[string]any)
		name, _ := meta["name"].(string)
		if ns, _ := meta["namespace"].(string); ns != "keygate" {
			t.Errorf("%s %s: namespace %q, want keygate", kind, name, ns)
		}
		spec, _ := u["spec"].(map[string]any)
		sel := map[string]string{}
		if s, ok := spec["selector"].(map[string]any); ok {
			for k, v := range asMap(s["matchLabels"]) {
				sel[k], _ = v.(string)
			}
		}
		if len(sel) == 0 {
			t.Errorf("%s %s: no selector.matchLabels", kind, name)
			continue
		}
		switch kind {
		case "ServiceMonitor":
			var svc *corev1.Service
			for _, s := range all[*corev1.Service](r.objs) {
				if labelsMatch(sel, s.Labels) {
					svc = s
				}
			}
			if svc == nil {
				t.Errorf("ServiceMonitor %s: selector %v matches no Service's labels", name, sel)
				continue
			}
			for _, ep := range asSlice(spec["endpoints"]) {
				port, _ := asMap(ep)["port"].(string)
				if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == port }) {
					t.Errorf("ServiceMonitor %s: Service %s has no port named %q", name, svc.Name, port)
				}
				if p, _ := asMap(ep)["path"].(string); p != "/metrics" {
					t.Errorf("ServiceMonitor %s: path %q, want /metrics", name, p)
				}
			}
		case "PodMonitor":
			var pod *corev1.PodSpec
			for _, d := range all[*appsv1.Deployment](r.objs) {
				if labelsMatch(sel, d.Spec.Template.Labels) {
					pod = &d.Spec.Template.Spec
				}
			}
			if pod == nil {
				t.Errorf("PodMonitor %s: selector %v matches no pods", name, sel)
				continue
			}
			for _, ep := range asSlice(spec["podMetricsEndpoints"]) {
				port, _ := asMap(ep)["port"].(string)
				if containerWithPort(*pod, port, 0) == "" {
					t.Errorf("PodMonitor %s: no container declares port %q", name, port)
				}
			}
		default:
			t.Errorf("unexpected %s %s", kind, name)
		}
	}
	if kinds["ServiceMonitor"] == 0 {
		t.Errorf("no ServiceMonitor rendered from %s", monitoringOverlay)
	}
	// The bundle server's metrics must be reachable through a ServiceMonitor.
	found := false
	for _, u := range r.unstructured {
		if u["kind"] == "ServiceMonitor" && asMap(asMap(asMap(u["spec"])["selector"])["matchLabels"])["app.kubernetes.io/name"] == "keygate-bundles" {
			found = true
		}
	}
	if !found {
		t.Error("no ServiceMonitor selects the bundle server's Service")
	}
}

func labelsMatch(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }
func asSlice(v any) []any        { s, _ := v.([]any); return s }

// dockerInstruction is one instruction of a Dockerfile (continuation lines joined).
type dockerInstruction struct {
	stage int // index of the FROM it belongs to
	cmd   string
	args  string
}

func parseDockerfile(t *testing.T) []dockerInstruction {
	t.Helper()
	f, err := os.Open(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		out   []dockerInstruction
		line  string
		stage = -1
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if line == "" && (l == "" || strings.HasPrefix(l, "#")) {
			continue
		}
		if c, ok := strings.CutSuffix(l, `\`); ok {
			line += c + " "
			continue
		}
		line += l
		cmd, args, _ := strings.Cut(line, " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stage++
		}
		out = append(out, dockerInstruction{stage: stage, cmd: cmd, args: strings.TrimSpace(args)})
		line = ""
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDockerfile: the image is a static, trimmed build of ./cmd/keygate, copied into a small base with CA
// certificates (distroless/static or scratch), run as the non-root uid the manifests use, with the keygate
// binary as its entrypoint (so the manifests' args are keygate subcommands).
func TestDockerfile(t *testing.T) {
	t.Parallel()
	ins := parseDockerfile(t)
	last := ins[len(ins)-1].stage
	var (
		binary, user, entrypoint, base string
		staticBuild                    bool
		stageNames                     = map[string]int{}
	)
	for _, in := range ins {
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				stageNames[f[2]] = in.stage
			}
			if in.stage == last {
				base = f[0]
			}
		case in.cmd == "RUN" && strings.Contains(in.args, "go build"):
			if !strings.Contains(in.args, "CGO_ENABLED=0") || !strings.Contains(in.args, "-trimpath") ||
				!strings.Contains(in.args, "./cmd/keygate") {
				t.Errorf("the go build is not CGO_ENABLED=0 -trimpath ./cmd/keygate: %s", in.args)
				continue
			}
			if m := regexp.MustCompile(`-o (\S+)`).FindStringSubmatch(in.args); m != nil {
				binary = m[1]
				staticBuild = true
			}
		case in.cmd == "COPY" && in.stage == last:
			f := strings.Fields(in.args)
			if len(f) == 3 && strings.HasPrefix(f[0], "--from=") && f[1] == binary {
				if _, ok := stageNames[strings.TrimPrefix(f[0], "--from=")]; ok {
					entrypoint = f[2] // where the binary lands
				}
			}
		case in.cmd == "USER" && in.stage == last:
			user = in.args
		case in.cmd == "ENTRYPOINT" && in.stage == last:
			var ep []string
			if err := json.Unmarshal([]byte(in.args), &ep); err != nil || len(ep) == 0 {
				t.Errorf("ENTRYPOINT %s is not the exec form", in.args)
				continue
			}
			if ep[0] != entrypoint || path.Base(ep[0]) != "keygate" {
				t.Errorf("ENTRYPOINT %s is not the keygate binary built and copied (%q)", ep[0], entrypoint)
			}
		}
	}
	if !staticBuild {
		t.Error("no static go build (CGO_ENABLED=0 go build -trimpath -o ... ./cmd/keygate) in a build stage")
	}
	if entrypoint == "" {
		t.Errorf("the final stage does not COPY --from=<build stage> %s", binary)
	}
	if !strings.HasPrefix(base, "gcr.io/distroless/static") && base != "scratch" {
		t.Errorf("final base image %s, want gcr.io/distroless/static* (or scratch with CA certificates)", base)
	}
	uid, _, _ := strings.Cut(user, ":")
	n, err := strconv.Atoi(uid)
	if err != nil || n == 0 {
		t.Fatalf("USER %q: want a numeric non-root uid (runAsNonRoot checks a numeric uid)", user)
	}
	// The manifests run pods as this uid.
	for _, o := range loadManifests(t) {
		if d, ok := o.obj.(*appsv1.Deployment); ok {
			for _, c := range d.Spec.Template.Spec.Containers {
				sc := d.Spec.Template.Spec.SecurityContext
				if strings.Contains(c.Image, "/keygate/keygate") && (sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != int64(n)) {
					t.Errorf("%s/%s does not run as the image's uid %d", d.Name, c.Name, n)
				}
			}
		}
	}
	// The image the Makefile builds is the one the manifests name.
	image := makeVar(t, "IMAGE")
	named := false
	for _, im := range loadKustomization(t).Images {
		named = named || im.Name == image
	}
	if !named {
		t.Errorf("kustomization.yaml images does not name %s (the Makefile's IMAGE)", image)
	}
	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".git", "bin/"} {
		if !slices.Contains(strings.Fields(string(ignore)), want) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
}

// TestMakeBuildIsStatic: make build compiles with CGO_ENABLED=0 and -trimpath, like the image.
func TestMakeBuildIsStatic(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(makefile)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^build:.*\n\t(.*)$`).FindSubmatch(data)
	if m == nil {
		t.Fatal("no build target in the Makefile")
	}
	recipe := string(m[1])
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/keygate"} {
		if !strings.Contains(recipe, want) {
			t.Errorf("make build's recipe %q lacks %s", recipe, want)
		}
	}
}
