# METADATA
# title: keygate reason codes
# description: |
#   The closed set of reason codes of docs/decisions.md, in the order the rules apply them.
#   Every decision lists its reasons in this order, so the first one is the most fundamental.
package keygate.reason

codes := [
	"missing_subject",
	"unknown_token",
	"token_revoked",
	"token_expired",
	"user_deleted",
	"missing_org",
	"unknown_org",
	"missing_key",
	"unknown_key",
	"resource_not_found",
	"resource_not_in_org",
	"invalid_resource",
	"owner_only",
	"owner_required",
	"no_grant",
	"actor_deleted",
	"target_deleted",
	"invalid_action",
	"unknown_role",
	"role_not_in_org",
	"missing_team",
	"unknown_team",
	"team_not_in_org",
	"missing_workspace",
	"unknown_workspace",
	"workspace_not_in_org",
	"last_org_admin",
	"last_provider_admin",
	"free_plan_single_org",
	"escalation",
	"not_permitted",
	"unauthenticated",
	"invalid_token",
	"route_not_found",
	"invalid_path",
	"malformed_request",
	"request_too_large",
	"path_too_long",
	"ambiguous_request",
	"no_bundle",
	"evaluation_error",
	"deadline_exceeded",
]

# Codes that mean the caller is not (or no longer) authenticated: Envoy answers 401, not 403.
identity := {
	"unauthenticated",
	"invalid_token",
	"missing_subject",
	"unknown_token",
	"token_revoked",
	"token_expired",
	"user_deleted",
}

# ordered lists the codes of the set s in canonical order. A set of none or one is its own order (most
# denials have one reason; this spares walking every code).
ordered(s) := [c | some c in s] if count(s) < 2

else := [c | some c in codes; c in s]
