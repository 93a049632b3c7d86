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
#   (x-keygate-user, x-keygate-org, and request_headers_to_remove) when allowed, or a JSON body and
#   its headers when denied.
# entrypoint: true
response := _answer(_reasons, {"user": _user, "org": _org_out, "key": _key, "route": _pattern, "remove": _spoofed})

# METADATA
# title: Envoy allowed
# description: The bare boolean of response.
# entrypoint: true
allowed := count(_reasons) == 0

# METADATA
# title: Envoy response for a matched route
# description: |
#   The same answer as response, for a request whose route keygate authz has already matched in Go
#   (internal/sidecar/fast.go, its speed layer; TestFastPathMatchesPolicy and FuzzFastPathMatchesPolicy
#   hold the two together): input {"query": the data.keygate.authz input, "route": the route's pattern}.
#   One evaluation answers an allowed and a denied request alike.
# entrypoint: true
routed := _answer(reasons, {"user": q.user, "org": q.org, "key": q.key, "route": input.route, "remove": []}) if {
	q := input.query
	reasons := data.keygate.authz.reasons with input as q
}

# ---------------------------------------------------------------------------
# Identity: input.identity, else the (first, by metadata key) jwt_authn payload.

_jwt := _filter_metadata["envoy.filters.http.jwt_authn"]

# opa-envoy-plugin's input names fields as protobuf JSON does (metadataContext.filterMetadata,
# contextExtensions); the snake_case spelling keygate accepted before keeps working.
_filter_metadata := input.attributes.metadataContext.filterMetadata if {
	is_object(input.attributes.metadataContext.filterMetadata)
} else := input.attributes.metadata_context.filter_metadata

_context_extensions := input.attributes.contextExtensions if {
	is_object(input.attributes.contextExtensions)
} else := input.attributes.context_extensions

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

_invalid_path if {
	some segment in _segments
	regex.match(`[\x00-\x1f\x7f]`, segment)
}

# What keygate authz refuses before any decision (envoyauth.NormalizePath), so that a stock opa-envoy-plugin,
# whose parsed_path is percent-decoded and split on "/", refuses it too: encoded dots, slashes and
# backslashes, backslashes, control characters, a path not starting with "/".
_invalid_path if regex.match(`(?i)%(2e|2f|5c)|\\|[\x00-\x1f\x7f]`, split(_http.path, "?")[0])

_invalid_path if not startswith(_http.path, "/")

# opa-envoy-plugin's parsed_path drops every leading "/" ("//admin" reads as ["admin"]).
_invalid_path if contains(split(_http.path, "?")[0], "//")

# Bind every key first: the whole reference must be ground before it reads the route table.
_candidates := routes if {
	service := _context_extensions.service
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
	h := _header("x-current-orgid")
	h != ""
} else := h if {
	h := _header("layer5-current-orgid")
	h != ""
}

# Request headers by lowercase name, from the headers map or Envoy's header_map (headerMap: {"headers":
# [{"key", "value" | "rawValue" (base64)}]}). A header given more than once with different values has no
# value here (never "last wins"; keygate authz refuses such a request before any decision).
_header_values[lower(name)] contains value if some name, value in _http.headers

_header_values[lower(h.key)] contains _header_map_value(h) if some h in _http.headerMap.headers

_header_map_value(h) := h.value if is_string(h.value)

else := base64.decode(h.rawValue)

_header(name) := value if {
	values := _header_values[name]
	count(values) == 1
	some value in values
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

# ---------------------------------------------------------------------------
# Reasons: authentication, the subject alone, then the request, then the authz decision
# (which repeats the subject checks, so a valid request costs one evaluation of data.keygate.authz).

_request_reasons := ["invalid_path"] if _invalid_path

else := ["route_not_found"] if not _route

else := ["missing_org"] if not _org

# A malformed path is refused first, whoever asks (keygate authz refuses it before reading the identity).
_reasons := ["invalid_path"] if _invalid_path

else := ["unauthenticated"] if not _subject

else := r if {
	not _request_reasons
	r := data.keygate.authz.reasons with input as _query
} else := r if {
	r := data.keygate.authz.subject_reasons with input as _subject
	count(r) > 0
} else := _request_reasons

# Client-sent x-keygate-* headers (keygate authz leaves them out of the input and removes them itself; under a
# stock opa-envoy-plugin the answer removes them).
_spoofed := sort([name |
	some name, _ in _header_values
	startswith(name, "x-keygate-")
	not name in {"x-keygate-user", "x-keygate-org", "x-keygate-decision-id"}
])

# ---------------------------------------------------------------------------
# The answer, from the reasons and the request's user, org, key and route.

_answer(reasons, r) := object.union(
	{
		"allowed": count(reasons) == 0,
		"http_status": _status_of(reasons),
		"reason": _first(reasons),
		"reasons": reasons,
		"key": r.key,
		"key_name": _key_name_of(r.key),
		"user": r.user,
		"org": r.org,
		"route": r.route,
	},
	_extra_of(reasons, r),
)

_first(reasons) := code if code := reasons[0]

else := ""

_status_of(reasons) := 200 if count(reasons) == 0

else := 401 if reasons[0] in reason.identity

else := 403

_key_name_of(key) := name if name := db.keys[key].name

else := ""

# Allowed: the identity headers for the upstream and the client's x-keygate-* headers removed. Denied: the
# JSON body and its headers, as keygate authz sends them (it adds only the decision id).
_extra_of(reasons, r) := {
	"headers": {"x-keygate-user": r.user, "x-keygate-org": r.org},
	"request_headers_to_remove": r.remove,
} if {
	count(reasons) == 0
} else := {"headers": _deny_headers(reasons), "body": json.marshal(object.union(
	{
		"allowed": false,
		"reason": reasons[0],
		"reasons": reasons,
		"missing_key": _missing_key(reasons[0], r.key),
		"key_id": r.key,
		"route": r.route,
	},
	{k: v | some k, v in {"key": r.key, "key_name": _key_name_of(r.key)}; v != ""},
))}

_deny_headers(reasons) := {"content-type": "application/json", "www-authenticate": `Bearer realm="keygate"`} if {
	reasons[0] in reason.identity
} else := {"content-type": "application/json"}

_missing_key(code, key) := _key_name_of(key) if code in {"no_grant", "owner_only", "owner_required"}

else := ""
