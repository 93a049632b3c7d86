# METADATA
# title: keygate Envoy ext_authz
# description: |
#   The response for Envoy's ext_authz (opa-envoy-plugin input shape). The subject comes from
#   input.identity (set by keygate after verifying the bearer JWT) or else from the jwt_authn
#   filter metadata; the route table maps (service, method, path) to a key, an org and a resource;
#   the answer is data.keygate.authz's. Identity failures are 401, every other denial 403.
package keygate.envoy

import data.keygate.db
import data.keygate.reason

# METADATA
# title: Envoy response
# description: |
#   {allowed, http_status, reason, reasons, key, key_name, user, org, route} plus headers
#   (x-keygate-user, x-keygate-org) when allowed or a JSON body when denied.
# entrypoint: true
response := object.union(
	{
		"allowed": allowed,
		"http_status": _status,
		"reason": _reason,
		"reasons": _reasons,
		"key": _key,
		"key_name": _key_name,
		"user": _user,
		"org": _org_out,
		"route": _pattern,
	},
	_extra,
)

# METADATA
# title: Envoy allowed
# description: The bare boolean of response.
# entrypoint: true
allowed := count(_reasons) == 0

# ---------------------------------------------------------------------------
# Identity: input.identity, else the (first, by metadata key) jwt_authn payload.

_jwt := input.attributes.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"]

_identity := input.identity if is_object(input.identity)

else := {"user": object.get(payload, "sub", ""), "token": object.get(payload, "jti", "")} if {
	payload := _jwt[min({k | some k, p in _jwt; is_object(p)})]
}

default _user := ""

_user := _identity.user if is_string(_identity.user)

# "" = no token (data.keygate.authz treats an empty token as absent). A JWT id that is not one of
# keygate's tokens (a session JWT of the identity provider) is no token: the verified subject decides.
default _token := ""

_token := _identity.token if {
	is_string(_identity.token)
	db.tokens[_identity.token]
}

_subject := {"user": _user, "token": _token} if _user != ""

# ---------------------------------------------------------------------------
# Path and route.

_http := input.attributes.request.http

_segments := input.parsed_path if is_array(input.parsed_path)

else := split(trim_prefix(split(_http.path, "?")[0], "/"), "/")

_invalid_path if {
	some segment in _segments
	segment in {"", ".", ".."}
}

# Bind every key first: the whole reference must be ground before it reads the route table.
_candidates := routes if {
	service := input.attributes.context_extensions.service
	method := upper(_http.method)
	length := format_int(count(_segments), 10)
	routes := db.routes[service][method][length]
}

# The matching candidate with the most literal segments; ties go to the first in the table.
_matching := [i | some i, candidate in _candidates; _matches(candidate.segments)]

_route := _candidates[_matching[0]] if count(_matching) == 1

else := _candidates[min({[0 - literals, i] |
	some i in _matching
	literals := count([s | some s in _candidates[i].segments; not _is_param(s)])
})[1]]

# Every literal segment equals the path's; parameters match any segment (and no segment of a
# valid path is empty).
_matches(pattern) if {
	not _invalid_path
	count([s | some i, s in pattern; s != _segments[i]; not _is_param(s)]) == 0
}

_is_param(s) if {
	startswith(s, "{")
	endswith(s, "}")
}

_params[trim(s, "{}")] := _segments[i] if {
	some i, s in _route.segments
	_is_param(s)
}

_org := _header_org if _route.org_from == "header"

_org := _params[_route.org_from] if _route.org_from != "header"

_header_org := h if {
	h := _http.headers["x-current-orgid"]
	h != ""
} else := h if {
	h := _http.headers["layer5-current-orgid"]
	h != ""
}

default _pattern := ""

_pattern := _route.pattern

default _key := ""

_key := _route.key

default _org_out := ""

_org_out := _org

_query := {"user": _user, "token": _token, "org": _org, "key": _route.key, "resource": _resource}

# null = no resource (data.keygate.authz treats a null resource as absent).
_resource := {"type": _route.resource_type, "id": object.get(_params, _route.resource_param, "")} if {
	_route.resource_type != ""
} else := null

default _key_name := ""

_key_name := db.keys[_key].name

# ---------------------------------------------------------------------------
# Reasons: authentication, the subject alone, then the request, then the authz decision
# (which repeats the subject checks, so a valid request costs one evaluation of data.keygate.authz).

_request_reasons := ["invalid_path"] if _invalid_path

else := ["route_not_found"] if not _route

else := ["missing_org"] if not _org

_reasons := ["unauthenticated"] if not _subject

else := r if {
	not _request_reasons
	r := data.keygate.authz.reasons with input as _query
} else := r if {
	r := data.keygate.authz.subject_reasons with input as _subject
	count(r) > 0
} else := _request_reasons

default _reason := ""

_reason := _reasons[0]

_status := 200 if allowed

else := 401 if _reason in reason.identity

else := 403

_extra := {"headers": {"x-keygate-user": _user, "x-keygate-org": _org}} if allowed

else := {"body": json.marshal({
	"allowed": false,
	"reason": _reason,
	"missing_key": _missing_key,
	"key_id": _key,
	"route": _pattern,
})}

default _missing_key := ""

_missing_key := db.keys[_key].name if _reason in {"no_grant", "owner_only", "owner_required"}
