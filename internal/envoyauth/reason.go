// Package envoyauth translates Envoy ext_authz v3 CheckRequests into keygate's Rego input document and
// keygate's decisions into CheckResponses. It evaluates nothing itself.
package envoyauth

// Reason codes: the closed set of docs/decisions.md, and the only values of the reason metric label
// (plus ReasonNone on allow and ReasonOther for a code the policy should not have returned).
const (
	ReasonUnauthenticated  = "unauthenticated"
	ReasonInvalidToken     = "invalid_token"
	ReasonRouteNotFound    = "route_not_found"
	ReasonInvalidPath      = "invalid_path"
	ReasonNoBundle         = "no_bundle"
	ReasonEvaluationError  = "evaluation_error"
	ReasonDeadlineExceeded = "deadline_exceeded"
	// ReasonMalformedRequest: the CheckRequest's bytes are not a CheckRequest protobuf-go decodes (invalid
	// UTF-8 in a string field, bad wire format, metadata nested too deep).
	ReasonMalformedRequest = "malformed_request"
	// ReasonRequestTooLarge: the CheckRequest is larger than the sidecar's max_request_bytes.
	ReasonRequestTooLarge = "request_too_large"
	// ReasonPathTooLong: the :path is over max_path_bytes or has more than max_path_segments segments.
	ReasonPathTooLong = "path_too_long"
	// ReasonAmbiguousRequest: the request could mean two things to keygate and the upstream (a repeated
	// Authorization or org header, header names differing only in case, disagreeing org headers, a
	// method-override header).
	ReasonAmbiguousRequest = "ambiguous_request"

	// ReasonNone labels allowed decisions in metrics.
	ReasonNone = "none"
	// ReasonOther labels, in metrics only, a reason outside the documented set.
	ReasonOther = "other"
)

var reasons = map[string]bool{}

func init() {
	for _, r := range []string{
		"missing_subject", "unknown_token", "token_revoked", "token_expired", "user_deleted", "missing_org",
		"unknown_org", "missing_key", "unknown_key", "resource_not_found", "resource_not_in_org",
		"invalid_resource", "owner_only", "owner_required", "no_grant", "actor_deleted", "target_deleted",
		"invalid_action", "unknown_role", "role_not_in_org", "missing_team", "unknown_team", "team_not_in_org",
		"missing_workspace", "unknown_workspace", "workspace_not_in_org", "last_org_admin",
		"last_provider_admin", "free_plan_single_org", "escalation", "not_permitted",
		ReasonUnauthenticated, ReasonInvalidToken, ReasonRouteNotFound, ReasonInvalidPath, ReasonNoBundle,
		ReasonEvaluationError, ReasonDeadlineExceeded, ReasonMalformedRequest, ReasonRequestTooLarge,
		ReasonPathTooLong, ReasonAmbiguousRequest,
	} {
		reasons[r] = true
	}
}

// Reasons returns the documented reason codes (unordered).
func Reasons() []string {
	out := make([]string, 0, len(reasons))
	for r := range reasons {
		out = append(out, r)
	}
	return out
}

// KnownReason reports whether r is a documented reason code.
func KnownReason(r string) bool { return reasons[r] }

// MetricReason maps r onto the closed label set: r itself when documented, ReasonNone when empty,
// ReasonOther otherwise.
func MetricReason(r string) string {
	switch {
	case r == "":
		return ReasonNone
	case reasons[r]:
		return r
	default:
		return ReasonOther
	}
}
