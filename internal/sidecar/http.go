package sidecar

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const maxBodyBytes = 1 << 20

// Entrypoints are the decision documents the data API answers by default: the rules annotated
// `entrypoint: true` in policies/keygate (TestEntrypointsAreTheAnnotatedRules holds the two together).
// Their sub-documents (data.keygate.authz.decision.allow) are answered too. Any other path, the raw
// data.keygate.db included, needs DataAPIConfig.AllowRawData.
var Entrypoints = []string{
	"data.keygate.assign.assignable",
	"data.keygate.assign.decision",
	"data.keygate.authz.allow",
	"data.keygate.authz.decision",
	"data.keygate.authz.key_grants",
	"data.keygate.authz.keys",
	"data.keygate.authz.reasons",
	"data.keygate.envoy.allowed",
	"data.keygate.envoy.response",
	"data.keygate.envoy.routed",
}

var entrypointRefs = func() []ast.Ref {
	refs := make([]ast.Ref, len(Entrypoints))
	for i, e := range Entrypoints {
		refs[i] = ast.MustParseRef(e)
	}
	return refs
}()

// isEntrypoint reports whether ref is a decision entrypoint or a document inside one.
func isEntrypoint(ref ast.Ref) bool {
	for _, e := range entrypointRefs {
		if ref.HasPrefix(e) {
			return true
		}
	}
	return false
}

func (s *Sidecar) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/data/{path...}", s.handleData)
	mux.HandleFunc("GET /v1/data/{path...}", s.handleData)
	mux.HandleFunc("POST /v1/data", s.handleData)
	mux.HandleFunc("GET /v1/data", s.handleData)
	mux.HandleFunc("GET /health", s.handleHealth)
	mux.HandleFunc("GET /v1/status", s.handleStatus)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	return mux
}

// handleHealth: 200 while the server runs; with ?bundles, 200 only once a bundle is active (500 before,
// like OPA).
func (s *Sidecar) handleHealth(w http.ResponseWriter, r *http.Request) {
	if _, ok := r.URL.Query()["bundles"]; ok && !s.Ready() {
		msg := "no bundle activated"
		if s.engine.stale.Load() {
			msg = "bundle older than max_bundle_age"
		}
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": msg})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

// handleStatus serves the status plugin's document (OPA's status API format: labels, bundles with
// active_revision, last_successful_download, errors; decision_logs; plugins) as OPA's GET /v1/status does:
// {"result": {...}}.
func (s *Sidecar) handleStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.engine.snapshot(r.Context())
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, apiError{"unavailable", err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": st})
}

type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// handleData is OPA's data API: POST {"input": ...} (or GET ?input=JSON) -> {"result": ..., "decision_id"},
// or just {"decision_id"} when the document is undefined.
func (s *Sidecar) handleData(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ref := ast.Ref{ast.DefaultRootDocument}
	for _, seg := range strings.Split(strings.Trim(r.PathValue("path"), "/"), "/") {
		if seg != "" {
			ref = append(ref, ast.StringTerm(seg))
		}
	}
	if !s.cfg.DataAPI.AllowRawData && !isEntrypoint(ref) {
		s.metrics.dataRefused.Inc()
		writeJSON(w, http.StatusForbidden, apiError{"forbidden", ref.String() + " is not a decision " +
			"entrypoint (data.keygate.authz.decision, data.keygate.assign.decision, data.keygate.envoy.response, ...); " +
			"reading other documents, the raw data included, needs data_api.allow_raw_data: true (--data-api-raw)"})
		return
	}
	var input ast.Value
	var raw []byte
	if r.Method == http.MethodPost {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{"invalid_parameter", err.Error()})
			return
		}
		if len(bytes.TrimSpace(body)) > 0 {
			var req struct {
				Input *json.RawMessage `json:"input"`
			}
			if err := json.Unmarshal(body, &req); err != nil {
				writeJSON(w, http.StatusBadRequest, apiError{"invalid_parameter", "body: " + err.Error()})
				return
			}
			if req.Input != nil {
				raw = *req.Input
			}
		}
	} else if v := r.URL.Query().Get("input"); v != "" {
		raw = []byte(v)
	}
	if raw != nil {
		var x any
		if err := util.UnmarshalJSON(raw, &x); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{"invalid_parameter", "input: " + err.Error()})
			return
		}
		v, err := ast.InterfaceToValue(x)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{"invalid_parameter", "input: " + err.Error()})
			return
		}
		input = v
	}

	id := s.decisionID()
	path := ref.String()
	result, defined, rev, err := s.evalPath(r.Context(), path, input)
	switch {
	case errors.Is(err, errNoBundle):
		writeJSON(w, http.StatusServiceUnavailable, apiError{"unavailable", "no bundle activated"})
		return
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, apiError{"internal_error", err.Error()})
		return
	}
	out := map[string]any{"decision_id": id}
	if defined {
		out["result"] = result
	}
	writeJSON(w, http.StatusOK, out)

	// Decisions (objects with allow/allowed) count and log like Checks.
	if m, ok := result.(map[string]any); ok {
		allowed, isDecision := m["allow"].(bool)
		if !isDecision {
			allowed, isDecision = m["allowed"].(bool)
		}
		if isDecision {
			res, reason := "allow", ""
			if !allowed {
				res = "deny"
				if rs, ok := m["reasons"].([]any); ok && len(rs) > 0 {
					reason, _ = rs[0].(string)
				}
				if reason == "" {
					reason, _ = m["reason"].(string)
				}
			}
			s.metrics.decision(res, reason)
			s.logs.log(decisionEntry{ID: id, Time: start, Path: path, Revision: rev, Input: input,
				Result: result, Outcome: res, Reason: reason, From: r.RemoteAddr, Duration: time.Since(start)})
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}
