package envoyauth

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
)

// Upstream headers set on allow.
const (
	HeaderUser       = "x-keygate-user"
	HeaderOrg        = "x-keygate-org"
	HeaderDecisionID = "x-keygate-decision-id"
)

// Decision is the result of data.keygate.envoy.response.
type Decision struct {
	Allowed    bool              `json:"allowed"`
	HTTPStatus int               `json:"http_status"`
	Reason     string            `json:"reason,omitempty"`
	Reasons    []string          `json:"reasons,omitempty"`
	Key        string            `json:"key,omitempty"`
	KeyName    string            `json:"key_name,omitempty"`
	User       string            `json:"user,omitempty"`
	Org        string            `json:"org,omitempty"`
	Route      string            `json:"route,omitempty"`
	Headers    map[string]string `json:"headers,omitempty"`
	Body       string            `json:"body,omitempty"`
}

// Deny is a decision made without the policy (bad path, bad token, no bundle, errors).
func Deny(status int, reason string) Decision {
	return Decision{HTTPStatus: status, Reason: reason, Reasons: []string{reason}}
}

// DecisionFromResult reads the policy's answer (the JSON-like value rego returns). A result that is not an
// object with a boolean "allowed" is an error.
func DecisionFromResult(v any) (Decision, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return Decision{}, fmt.Errorf("response is %T, not an object", v)
	}
	var d Decision
	if d.Allowed, ok = m["allowed"].(bool); !ok {
		return Decision{}, fmt.Errorf("response.allowed is %T, not a boolean", m["allowed"])
	}
	switch n := m["http_status"].(type) {
	case json.Number:
		i, err := n.Int64()
		if err != nil {
			return Decision{}, fmt.Errorf("response.http_status: %w", err)
		}
		d.HTTPStatus = int(i)
	case float64:
		d.HTTPStatus = int(n)
	case int:
		d.HTTPStatus = n
	}
	d.Reason, _ = m["reason"].(string)
	if rs, ok := m["reasons"].([]any); ok {
		d.Reasons = make([]string, 0, len(rs))
		for _, r := range rs {
			if s, ok := r.(string); ok {
				d.Reasons = append(d.Reasons, s)
			}
		}
	}
	d.Key, _ = m["key"].(string)
	d.KeyName, _ = m["key_name"].(string)
	d.User, _ = m["user"].(string)
	d.Org, _ = m["org"].(string)
	d.Route, _ = m["route"].(string)
	d.Body, _ = m["body"].(string)
	if hs, ok := m["headers"].(map[string]any); ok && len(hs) > 0 {
		d.Headers = make(map[string]string, len(hs))
		for k, v := range hs {
			if s, ok := v.(string); ok {
				d.Headers[k] = s
			}
		}
	}
	if !d.Allowed {
		if d.Reason == "" && len(d.Reasons) > 0 {
			d.Reason = d.Reasons[0]
		}
		if d.Reason == "" {
			d.Reason = "not_permitted"
		}
		if d.HTTPStatus != http.StatusUnauthorized {
			d.HTTPStatus = http.StatusForbidden
		}
	}
	return d, nil
}

// CheckResponse renders d for Envoy. Allowed: OK with x-keygate-user, x-keygate-org and
// x-keygate-decision-id (overwriting client values) plus the policy's headers, and the other client-sent
// x-keygate-* headers (spoofed) removed. Denied: PERMISSION_DENIED / UNAUTHENTICATED with the HTTP status
// and a JSON body naming the reason, the missing key and the decision id.
func CheckResponse(d Decision, decisionID string, spoofed []string) *authv3.CheckResponse {
	if d.Allowed {
		ok := &authv3.OkHttpResponse{Headers: make([]*corev3.HeaderValueOption, 0, 3+len(d.Headers))}
		set := func(k, v string) {
			ok.Headers = append(ok.Headers, &corev3.HeaderValueOption{
				Header:       &corev3.HeaderValue{Key: k, Value: v},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			})
		}
		set(HeaderUser, d.User)
		set(HeaderOrg, d.Org)
		set(HeaderDecisionID, decisionID)
		if len(d.Headers) > 0 {
			keys := make([]string, 0, len(d.Headers))
			for k := range d.Headers {
				if k != HeaderUser && k != HeaderOrg && k != HeaderDecisionID {
					keys = append(keys, k)
				}
			}
			sort.Strings(keys)
			for _, k := range keys {
				set(k, d.Headers[k])
			}
		}
		for _, h := range spoofed {
			if h == HeaderUser || h == HeaderOrg || h == HeaderDecisionID {
				continue // overwritten above; removing it would drop keygate's value
			}
			if _, set := d.Headers[h]; !set {
				ok.HeadersToRemove = append(ok.HeadersToRemove, h)
			}
		}
		return &authv3.CheckResponse{
			Status:       &rpcstatus.Status{Code: int32(code.Code_OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
		}
	}

	grpcCode, httpCode := code.Code_PERMISSION_DENIED, typev3.StatusCode_Forbidden
	if d.HTTPStatus == http.StatusUnauthorized {
		grpcCode, httpCode = code.Code_UNAUTHENTICATED, typev3.StatusCode_Unauthorized
	}
	headers := []*corev3.HeaderValueOption{{
		Header:       &corev3.HeaderValue{Key: "content-type", Value: "application/json"},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}, {
		Header:       &corev3.HeaderValue{Key: HeaderDecisionID, Value: decisionID},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}}
	if httpCode == typev3.StatusCode_Unauthorized {
		headers = append(headers, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: "www-authenticate", Value: `Bearer realm="keygate"`},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(grpcCode)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: httpCode},
			Headers: headers,
			Body:    DenyBody(d, decisionID),
		}},
	}
}

// DenyBody is the JSON body of a denial: the policy's body object (when it sent one; else missing_key,
// key_id and route as the policy writes them) with reason, reasons, key, key_name and decision_id set from the
// decision.
func DenyBody(d Decision, decisionID string) string {
	body := map[string]any{}
	if d.Body != "" {
		_ = json.Unmarshal([]byte(d.Body), &body) // a non-object body is replaced
		if body == nil {
			body = map[string]any{}
		}
	}
	// A denial made in Go (bad path, bad token, no bundle) has the fields of the policy's body too.
	for _, kv := range [...][2]string{{"missing_key", ""}, {"key_id", d.Key}, {"route", d.Route}} {
		if _, ok := body[kv[0]]; !ok {
			body[kv[0]] = kv[1]
		}
	}
	body["allowed"] = false
	body["reason"] = d.Reason
	reasons := d.Reasons
	if len(reasons) == 0 {
		reasons = []string{d.Reason}
	}
	body["reasons"] = reasons
	if d.Key != "" {
		body["key"] = d.Key
	}
	if d.KeyName != "" {
		body["key_name"] = d.KeyName
	}
	body["decision_id"] = decisionID
	b, err := json.Marshal(body)
	if err != nil {
		return `{"allowed":false,"reason":"evaluation_error"}`
	}
	return string(b)
}
