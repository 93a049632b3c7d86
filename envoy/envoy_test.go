// Package envoy_test validates the Envoy configurations in this folder: each envoy/*.yaml must parse into
// go-control-plane's v3 Bootstrap without unknown fields, pass the generated proto validation, and keep the
// ext_authz safety properties keygate relies on (fail closed, 503 on error, API v3, a service on every route).
package envoy_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	// Types referenced only through typed_config Any values; linking them registers them for protojson.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

const (
	extAuthzFilter = "envoy.filters.http.ext_authz"
	jwtAuthnFilter = "envoy.filters.http.jwt_authn"
	routerFilter   = "envoy.filters.http.router"
	keygateCluster = "keygate"
	maxCheckBudget = time.Second
)

// LoadBootstrap parses an Envoy YAML bootstrap strictly (unknown fields and unresolvable Any types are errors)
// and runs the proto validation rules.
func LoadBootstrap(data []byte) (*bootstrapv3.Bootstrap, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("converting YAML: %w", err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		return nil, fmt.Errorf("decoding Bootstrap: %w", err)
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("validating Bootstrap: %w", err)
	}
	return &b, nil
}

// CheckSafety returns every violation of the properties keygate's deployment relies on.
func CheckSafety(b *bootstrapv3.Bootstrap) error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	extAuthzCount := 0
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				if !f.GetTypedConfig().MessageIs((*hcmv3.HttpConnectionManager)(nil)) {
					continue
				}
				hcm := &hcmv3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
					fail("listener %s: decoding http_connection_manager: %w", l.GetName(), err)
					continue
				}
				where := fmt.Sprintf("listener %s", l.GetName())
				hasExtAuthz, err := checkHTTPFilters(where, hcm.GetHttpFilters())
				if err != nil {
					errs = append(errs, err)
				}
				if !hasExtAuthz {
					continue
				}
				extAuthzCount++
				if err := checkRoutes(where, hcm.GetRouteConfig()); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if extAuthzCount == 0 {
		fail("no http_connection_manager with %s", extAuthzFilter)
	}

	var keygate *clusterv3.Cluster
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == keygateCluster {
			keygate = c
		}
	}
	if keygate == nil {
		fail("no cluster named %q", keygateCluster)
	} else if err := checkHTTP2(keygate); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkHTTPFilters checks the filter chain order (jwt_authn, then ext_authz, then router last) and the
// ext_authz settings. It reports whether the chain has ext_authz.
func checkHTTPFilters(where string, filters []*hcmv3.HttpFilter) (bool, error) {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(where+": "+format, args...))
	}
	pos := map[string]int{}
	for i, f := range filters {
		pos[f.GetName()] = i
	}
	if len(filters) == 0 || filters[len(filters)-1].GetName() != routerFilter {
		fail("%s must be the last HTTP filter", routerFilter)
	} else if !filters[len(filters)-1].GetTypedConfig().MessageIs((*routerv3.Router)(nil)) {
		fail("%s has a typed_config that is not a Router", routerFilter)
	}
	i, hasExtAuthz := pos[extAuthzFilter]
	if !hasExtAuthz {
		return false, errors.Join(errs...)
	}
	if j, ok := pos[jwtAuthnFilter]; ok {
		if j > i {
			fail("%s must come before %s", jwtAuthnFilter, extAuthzFilter)
		}
		jwt := &jwtauthnv3.JwtAuthentication{}
		if err := filters[j].GetTypedConfig().UnmarshalTo(jwt); err != nil {
			fail("decoding %s: %w", jwtAuthnFilter, err)
		}
		for name, p := range jwt.GetProviders() {
			if p.GetPayloadInMetadata() == "" {
				fail("jwt provider %s: payload_in_metadata is not set (keygate reads the payload from it)", name)
			}
			if !p.GetForward() {
				fail("jwt provider %s: forward must be true (keygate may verify the bearer itself)", name)
			}
		}
	}

	ea := &extauthzv3.ExtAuthz{}
	if err := filters[i].GetTypedConfig().UnmarshalTo(ea); err != nil {
		fail("decoding %s: %w", extAuthzFilter, err)
		return true, errors.Join(errs...)
	}
	if ea.GetFailureModeAllow() {
		fail("ext_authz failure_mode_allow must be false (fail closed)")
	}
	if ea.GetShadowMode() {
		fail("ext_authz shadow_mode must be false")
	}
	if ea.GetFilterEnabled() != nil || ea.GetFilterEnabledMetadata() != nil {
		fail("ext_authz must not be switchable off by filter_enabled")
	}
	if got := ea.GetStatusOnError().GetCode(); got != typev3.StatusCode_ServiceUnavailable {
		fail("ext_authz status_on_error is %v, want ServiceUnavailable (503)", got)
	}
	if got := ea.GetTransportApiVersion(); got != corev3.ApiVersion_V3 {
		fail("ext_authz transport_api_version is %v, want V3", got)
	}
	if ea.GetIncludePeerCertificate() {
		fail("ext_authz include_peer_certificate must be false")
	}
	if ea.GetWithRequestBody() != nil {
		fail("ext_authz with_request_body must be off")
	}
	gs := ea.GetGrpcService()
	if got := gs.GetEnvoyGrpc().GetClusterName(); got != keygateCluster {
		fail("ext_authz grpc_service.envoy_grpc.cluster_name is %q, want %q", got, keygateCluster)
	}
	if t := gs.GetTimeout(); t == nil || t.AsDuration() <= 0 || t.AsDuration() > maxCheckBudget {
		fail("ext_authz grpc_service.timeout must be set and at most %v, got %v", maxCheckBudget, t.AsDuration())
	}
	if j, ok := pos[jwtAuthnFilter]; ok && j < i && !contains(ea.GetMetadataContextNamespaces(), jwtAuthnFilter) {
		fail("ext_authz metadata_context_namespaces must include %s to pass the JWT payload", jwtAuthnFilter)
	}
	return true, errors.Join(errs...)
}

// checkRoutes requires every route behind ext_authz to name its keygate service in context_extensions.
func checkRoutes(where string, rc *routev3.RouteConfiguration) error {
	var errs []error
	if rc == nil {
		return fmt.Errorf("%s: ext_authz needs an inline route_config to check context_extensions", where)
	}
	for _, vh := range rc.GetVirtualHosts() {
		vhService, err := serviceOf(vh.GetTypedPerFilterConfig())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s virtual_host %s: %w", where, vh.GetName(), err))
		}
		if len(vh.GetRoutes()) == 0 {
			errs = append(errs, fmt.Errorf("%s virtual_host %s: no routes", where, vh.GetName()))
		}
		for n, r := range vh.GetRoutes() {
			service, err := serviceOf(r.GetTypedPerFilterConfig())
			if err != nil {
				errs = append(errs, fmt.Errorf("%s virtual_host %s route %d: %w", where, vh.GetName(), n, err))
				continue
			}
			if service == "" {
				service = vhService
			}
			if service == "" {
				errs = append(errs, fmt.Errorf("%s virtual_host %s route %d (%v): no %s check_settings.context_extensions.service",
					where, vh.GetName(), n, r.GetMatch().GetPathSpecifier(), extAuthzFilter))
			}
		}
	}
	return errors.Join(errs...)
}

// serviceOf returns the context_extensions service of an ext_authz per-route config ("" when absent).
// Disabling ext_authz on a route is an error: every route in these configs is authorized.
func serviceOf(perFilter map[string]*anypb.Any) (string, error) {
	cfg, ok := perFilter[extAuthzFilter]
	if !ok {
		return "", nil
	}
	pr := &extauthzv3.ExtAuthzPerRoute{}
	if err := cfg.UnmarshalTo(pr); err != nil {
		return "", fmt.Errorf("decoding ExtAuthzPerRoute: %w", err)
	}
	if pr.GetDisabled() {
		return "", errors.New("ext_authz is disabled")
	}
	return pr.GetCheckSettings().GetContextExtensions()["service"], nil
}

func checkHTTP2(c *clusterv3.Cluster) error {
	const key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	a, ok := c.GetTypedExtensionProtocolOptions()[key]
	if !ok {
		return fmt.Errorf("cluster %s: no %s (gRPC needs HTTP/2)", c.GetName(), key)
	}
	opts := &upstreamhttpv3.HttpProtocolOptions{}
	if err := a.UnmarshalTo(opts); err != nil {
		return fmt.Errorf("cluster %s: decoding %s: %w", c.GetName(), key, err)
	}
	if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		return fmt.Errorf("cluster %s: explicit_http_config.http2_protocol_options is not set", c.GetName())
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func configs(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("found %d envoy/*.yaml files, want at least sidecar.yaml and front-proxy.yaml", len(files))
	}
	return files
}

func TestConfigsAreValidAndSafe(t *testing.T) {
	t.Parallel()
	for _, file := range configs(t) {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			b, err := LoadBootstrap(data)
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckSafety(b); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSidecarListensWhereKeygateExpects(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadBootstrap(data)
	if err != nil {
		t.Fatal(err)
	}
	endpoints := map[string]string{}
	for _, c := range b.GetStaticResources().GetClusters() {
		for _, e := range c.GetLoadAssignment().GetEndpoints() {
			for _, lb := range e.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				endpoints[c.GetName()] = fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
			}
		}
	}
	for cluster, want := range map[string]string{"keygate": "127.0.0.1:9191", "app": "127.0.0.1:8080"} {
		if got := endpoints[cluster]; got != want {
			t.Errorf("cluster %s endpoint = %q, want %q", cluster, got, want)
		}
	}
}

// TestBrokenConfigsAreCaught proves the checks above fail on the mistakes they exist to catch.
func TestBrokenConfigsAreCaught(t *testing.T) {
	t.Parallel()
	orig, err := os.ReadFile("sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		old     string
		new     string
		wantErr string
	}{
		{
			name:    "unknown field",
			old:     "failure_mode_allow: false",
			new:     "failure_mode_allow: false\n              fail_open_please: true",
			wantErr: "unknown field",
		},
		{
			name:    "fail open",
			old:     "failure_mode_allow: false",
			new:     "failure_mode_allow: true",
			wantErr: "failure_mode_allow must be false",
		},
		{
			name:    "status on error 403",
			old:     "status_on_error: {code: ServiceUnavailable}",
			new:     "status_on_error: {code: Forbidden}",
			wantErr: "want ServiceUnavailable",
		},
		{
			name:    "no status on error",
			old:     "status_on_error: {code: ServiceUnavailable}",
			new:     "",
			wantErr: "want ServiceUnavailable",
		},
		{
			name:    "transport api v2",
			old:     "transport_api_version: V3",
			new:     "transport_api_version: AUTO",
			wantErr: "want V3",
		},
		{
			name:    "route without service",
			old:     "context_extensions: {service: identity}",
			new:     "context_extensions: {team: identity}",
			wantErr: "context_extensions.service",
		},
		{
			name:    "ext_authz disabled on a route",
			old:     "check_settings:\n                      # The keygate route table is keyed by (service, method, path pattern).\n                      context_extensions: {service: identity}",
			new:     "disabled: true",
			wantErr: "ext_authz is disabled",
		},
		{
			name:    "request body sent",
			old:     "include_peer_certificate: false",
			new:     "include_peer_certificate: false\n              with_request_body: {max_request_bytes: 1024}",
			wantErr: "with_request_body must be off",
		},
		{
			name:    "no timeout",
			old:     "timeout: 0.25s\n              # Fail closed",
			new:     "# Fail closed",
			wantErr: "timeout must be set",
		},
		{
			name:    "port out of range",
			old:     "port_value: 10000",
			new:     "port_value: 70000",
			wantErr: "PortValue",
		},
		{
			name:    "unresolvable typed_config",
			old:     "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
			new:     "type.googleapis.com/envoy.extensions.filters.http.nonesuch.v3.Nonesuch",
			wantErr: "decoding Bootstrap",
		},
		{
			name:    "keygate cluster without http2",
			old:     "http2_protocol_options: {}",
			new:     "http_protocol_options: {}",
			wantErr: "http2_protocol_options is not set",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if !strings.Contains(string(orig), tc.old) {
				t.Fatalf("sidecar.yaml no longer contains %q: update this case", tc.old)
			}
			// Replace the first occurrence only (the ingress listener comes first).
			broken := strings.Replace(string(orig), tc.old, tc.new, 1)
			b, err := LoadBootstrap([]byte(broken))
			if err == nil {
				err = CheckSafety(b)
			}
			if err == nil {
				t.Fatalf("broken config accepted, want error containing %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}
