package keygate.envoy_test

import data.keygate.envoy
import data.keygate.fixture

# 2033-05-18: after tok-ursula-expired, before tok-ursula-future.
now := 2000000000000000000

# req builds an opa-envoy-plugin input; extra is merged over it (identity, headers, metadata).
req(service, method, path, extra) := object.union(
	{
		"attributes": {
			"request": {"http": {"method": method, "path": path, "headers": {}}},
			"contextExtensions": {"service": service},
		},
		"parsed_path": split(trim_prefix(path, "/"), "/"),
		"parsed_query": {},
	},
	extra,
)

who(user) := {"identity": {"user": user}}

as_token(user, token) := {"identity": {"user": user, "token": token}}

org_header(user, org) := object.union(who(user), {"attributes": {"request": {"http": {"headers": {"x-current-orgid": org}}}}})

jwt(payload) := {"attributes": {"metadataContext": {"filterMetadata": {"envoy.filters.http.jwt_authn": {"jwt_payload": payload}}}}}

# Optional expectations: a case checks a field only when it names it.
expect(tc, field, _) if not field in object.keys(tc)

expect(tc, field, actual) if tc[field] == actual

cases := [
	# Identity
	{
		"note": "no identity is unauthenticated",
		"input": req("identity", "GET", "/api/identity/orgs/org-a/teams", {}),
		"allowed": false, "http_status": 401, "reason": "unauthenticated", "user": "",
	},
	{
		"note": "identity without a user is unauthenticated",
		"input": req("identity", "GET", "/api/identity/orgs/org-a/teams", {"identity": {"token": "tok-ursula"}}),
		"allowed": false, "http_status": 401, "reason": "unauthenticated",
	},
	{
		"note": "verified identity is allowed and forwarded upstream",
		"input": req("identity", "GET", "/api/identity/orgs/org-a/teams", who("ursula")),
		"allowed": true, "http_status": 200, "reason": "", "reasons": [],
		"user": "ursula", "org": "org-a", "key": "k-view-teams", "key_name": "View All Teams",
		"route": "/api/identity/orgs/{org}/teams",
		"headers": {"x-keygate-user": "ursula", "x-keygate-org": "org-a"},
	},
	{
		"note": "verified identity with a live token allowed",
		"input": req("identity", "GET", "/api/identity/orgs/org-a/teams", as_token("ursula", "tok-ursula")),
		"allowed": true, "http_status": 200,
	},
	{
		"note": "jwt_authn payload is the fallback identity",
		"input": req("identity", "GET", "/api/identity/orgs/org-a/teams", jwt({"sub": "ursula", "jti": "tok-ursula"})),
		"allowed": true, "http_status": 200, "user": "ursula",
	},
	{
		"note": "jwt_authn payload without jti checks the user only",
		"input": req("identity", "GET", "/api/identity/orgs/org-a/teams", jwt({"sub": "ursula"})),
		"allowed": true, "http_status": 200,
	},
	{
		"note": "jwt_authn payload with a revoked jti is 401",
		"input": req("identity", "GET", "/api/identity/orgs/org-a/teams", jwt({"sub": "ursula", "jti": "tok-ursula-revoked"})),
		"allowed": false, "http_status": 401, "reason": "token_revoked",
	},
	{
		"note": "jwt_authn payload without sub is unauthenticated",
		"input": req("identity", "GET", "/api/identity/orgs/org-a/teams", jwt({"iss": "somebody"})),
		"allowed": false, "http_status": 401, "reason": "unauthenticated",
	},
	{
		"note": "revoked token denied with 401",
		"input": req("identity", "GET", "/api/identity/orgs/org-a/teams", as_token("ursula", "tok-ursula-revoked")),
		"allowed": false, "http_status": 401, "reason": "token_revoked",
	},
	{
		"note": "expired token denied with 401",
		"input": req("identity", "GET", "/api/identity/orgs/org-a/teams", as_token("ursula", "tok-ursula-expired")),
		"allowed": false, "http_status": 401, "reason": "token_expired",
	},
	{
		"note": "a JWT id that is not a keygate token leaves the verified subject to decide",
		"input": req("identity", "GET", "/api/identity/orgs/org-a/teams", as_token("ursula", "tok-nope")),
		"allowed": true, "http_status": 200, "reason": "",
	},
	{
		"note": "token of deleted user denied with 401",
		"input": req("identity", "GET", "/api/identity/orgs/org-a/teams", as_token("dan", "tok-dan")),
		"allowed": false, "http_status": 401, "reason": "user_deleted",
	},
	{
		"note": "identity failure is 401 even on an unknown route",
		"input": req("identity", "GET", "/api/nowhere", as_token("ursula", "tok-ursula-revoked")),
		"allowed": false, "http_status": 401, "reason": "token_revoked",
	},
	# Path and route
	{
		"note": "dot-dot segment is an invalid path",
		"input": req("identity", "GET", "/api/identity/orgs/../teams", who("ursula")),
		"allowed": false, "http_status": 403, "reason": "invalid_path",
	},
	{
		"note": "empty segment is an invalid path",
		"input": req("identity", "GET", "/api/identity//orgs/org-a/teams", who("ursula")),
		"allowed": false, "http_status": 403, "reason": "invalid_path",
	},
	{
		"note": "org header from Envoy's header_map",
		"input": object.union(req("identity", "GET", "/api/identity/orgs/org-a/teams", who("alice")), {"attributes": {"request": {"http": {"headerMap": {"headers": [{"key": "X-Current-Orgid", "value": "org-a"}]}}}}}),
		"allowed": true, "org": "org-a",
	},
	{
		"note": "org header from header_map as raw bytes",
		"input": object.union(req("identity", "GET", "/api/identity/orgs/org-a/teams", who("alice")), {"attributes": {"request": {"http": {"headerMap": {"headers": [{"key": "x-current-orgid", "rawValue": base64.encode("org-a")}]}}}}}),
		"allowed": true, "org": "org-a",
	},
	{
		"note": "two different values of the org header are no org header",
		"input": object.union(req("designs", "GET", "/api/designs", who("alice")), {"attributes": {"request": {"http": {"headerMap": {"headers": [{"key": "x-current-orgid", "value": "org-a"}, {"key": "x-current-orgid", "value": "org-b"}]}}}}}),
		"allowed": false, "reason": "missing_org",
	},
	{
		"note": "case variants of the org header with different values are no org header",
		"input": object.union(req("designs", "GET", "/api/designs", who("alice")), {"attributes": {"request": {"http": {"headers": {"X-Current-Orgid": "org-a", "x-current-orgid": "org-b"}}}}}),
		"allowed": false, "reason": "missing_org",
	},
	{
		"note": "encoded slash is an invalid path",
		"input": req("designs", "GET", "/api/designs/d-a1%2F..%2Fd-a2", who("ursula")),
		"allowed": false, "http_status": 403, "reason": "invalid_path",
	},
	{
		"note": "encoded dot in any case is an invalid path",
		"input": req("designs", "GET", "/api/designs/%2E%2e", who("ursula")),
		"allowed": false, "http_status": 403, "reason": "invalid_path",
	},
	{
		"note": "backslash is an invalid path",
		"input": req("designs", "GET", "/api/designs\\d-a1", who("ursula")),
		"allowed": false, "http_status": 403, "reason": "invalid_path",
	},
	{
		"note": "decoded control character is an invalid path",
		"input": object.union(req("designs", "GET", "/api/designs/d%00", who("ursula")), {"parsed_path": ["api", "designs", "d\u0000"]}),
		"allowed": false, "http_status": 403, "reason": "invalid_path",
	},
	{
		"note": "path without a leading slash is an invalid path",
		"input": object.union(req("designs", "GET", "api/designs", who("ursula")), {"parsed_path": ["api", "designs"]}),
		"allowed": false, "http_status": 403, "reason": "invalid_path",
	},
	{
		"note": "leading double slash is an invalid path whatever parsed_path says",
		"input": object.union(req("identity", "GET", "//api/identity/orgs/org-a/teams", org_header("alice", "org-a")), {"parsed_path": ["api", "identity", "orgs", "org-a", "teams"]}),
		"allowed": false, "http_status": 403, "reason": "invalid_path",
	},
	{
		"note": "an invalid path is refused before the identity is read",
		"input": req("designs", "GET", "/api//designs", {}),
		"allowed": false, "http_status": 403, "reason": "invalid_path",
	},
	{
		"note": "dot segment is an invalid path",
		"input": req("designs", "GET", "/api/./designs", who("ursula")),
		"allowed": false, "http_status": 403, "reason": "invalid_path",
	},
	{
		"note": "unknown route denied",
		"input": req("identity", "GET", "/api/nowhere", who("ursula")),
		"allowed": false, "http_status": 403, "reason": "route_not_found", "route": "", "key": "",
		"body": {"allowed": false, "reason": "route_not_found", "missing_key": "", "key_id": "", "route": ""},
	},
	{
		"note": "unknown service denied",
		"input": req("billing", "GET", "/api/identity/orgs/org-a/teams", who("ursula")),
		"allowed": false, "http_status": 403, "reason": "route_not_found",
	},
	{
		"note": "method not in the route table denied",
		"input": req("identity", "PATCH", "/api/identity/orgs/org-a/teams", who("ursula")),
		"allowed": false, "http_status": 403, "reason": "route_not_found",
	},
	{
		"note": "literal segments win over parameters",
		"input": req("identity", "GET", "/api/identity/orgs/org-a/teams/mine", who("ursula")),
		"allowed": true, "route": "/api/identity/orgs/{org}/teams/mine",
	},
	{
		"note": "parameter segment binds the resource",
		"input": req("identity", "GET", "/api/identity/orgs/org-a/teams/t-a1", who("ursula")),
		"allowed": true, "route": "/api/identity/orgs/{org}/teams/{team}",
	},
	{
		"note": "resource named by the path that does not exist is 403",
		"input": req("identity", "GET", "/api/identity/orgs/org-a/teams/t-nope", who("ursula")),
		"allowed": false, "http_status": 403, "reason": "resource_not_found",
	},
	{
		"note": "path without parsed_path is split from the request path",
		"input": json.patch(req("identity", "GET", "/api/identity/orgs/org-a/teams?x=1", who("ursula")), [{"op": "remove", "path": "/parsed_path"}]),
		"allowed": true, "route": "/api/identity/orgs/{org}/teams",
	},
	{
		"note": "route whose resource parameter is not in its pattern is an invalid resource",
		"input": req("designs", "GET", "/api/broken", org_header("ursula", "org-a")),
		"allowed": false, "http_status": 403, "reason": "invalid_resource",
	},
	# Org
	{
		"note": "org from the x-current-orgid header",
		"input": req("designs", "GET", "/api/designs", org_header("ursula", "org-a")),
		"allowed": true, "org": "org-a", "route": "/api/designs",
	},
	{
		"note": "org from the layer5-current-orgid header",
		"input": req("designs", "GET", "/api/designs", object.union(who("ursula"), {"attributes": {"request": {"http": {"headers": {"layer5-current-orgid": "org-a"}}}}})),
		"allowed": true, "org": "org-a",
	},
	{
		"note": "missing org header denied",
		"input": req("designs", "GET", "/api/designs", who("ursula")),
		"allowed": false, "http_status": 403, "reason": "missing_org",
	},
	{
		"note": "unknown org denied",
		"input": req("designs", "GET", "/api/designs", org_header("ursula", "org-z")),
		"allowed": false, "http_status": 403, "reason": "unknown_org",
	},
	{
		"note": "role in org A grants nothing in org B through Envoy",
		"input": req("identity", "PUT", "/api/identity/users/bob", org_header("bob", "org-b")),
		"allowed": false, "http_status": 403, "reason": "no_grant",
	},
	# Decisions
	{
		"note": "denied body names the reason and the missing key",
		"input": req("designs", "GET", "/api/designs/d-a2-private", org_header("mallory", "org-a")),
		"allowed": false, "http_status": 403, "reason": "no_grant", "user": "mallory", "org": "org-a",
		"body": {"allowed": false, "reason": "no_grant", "missing_key": "View Design", "key_id": "k-view-design", "route": "/api/designs/{design}"},
	},
	{
		"note": "cross-org workspace member may view design through Envoy",
		"input": req("designs", "GET", "/api/designs/d-a1-private", org_header("xavier", "org-a")),
		"allowed": true, "http_status": 200,
	},
	{
		"note": "owner-only key only on own design through Envoy",
		"input": req("designs", "DELETE", "/api/designs/d-a1-public", org_header("ursula", "org-a")),
		"allowed": false, "http_status": 403, "reason": "owner_only",
		"body": {"allowed": false, "reason": "owner_only", "missing_key": "Delete Design", "key_id": "k-delete-design", "route": "/api/designs/{design}"},
	},
	{
		"note": "owner may delete own design through Envoy",
		"input": req("designs", "DELETE", "/api/designs/d-a1-private", org_header("ursula", "org-a")),
		"allowed": true, "http_status": 200,
	},
	{
		"note": "org admin cannot delete org they do not own through Envoy",
		"input": req("identity", "DELETE", "/api/identity/orgs/org-a", who("bob")),
		"allowed": false, "http_status": 403, "reason": "owner_required",
	},
	{
		"note": "org owner may delete their org through Envoy",
		"input": req("identity", "DELETE", "/api/identity/orgs/org-a", who("alice")),
		"allowed": true, "http_status": 200,
	},
	{
		"note": "user may view own settings through Envoy",
		"input": req("identity", "PUT", "/api/identity/users/ursula", org_header("ursula", "org-a")),
		"allowed": true, "http_status": 200,
	},
	{
		"note": "workspace admin may edit their workspace through Envoy",
		"input": req("designs", "PUT", "/api/workspaces/w-a1", org_header("wendy", "org-a")),
		"allowed": true, "http_status": 200,
	},
	{
		"note": "provider admin allowed through Envoy in any org",
		"input": req("identity", "DELETE", "/api/identity/orgs/org-b", as_token("victor", "tok-victor")),
		"allowed": true, "http_status": 200,
	},
]

test_response[tc.note] if {
	some tc in cases
	r := envoy.response with input as tc.input with data.keygate.db as fixture.db with time.now_ns as now
	r.allowed == tc.allowed
	expect(tc, "http_status", r.http_status)
	expect(tc, "reason", r.reason)
	expect(tc, "reasons", r.reasons)
	expect(tc, "user", r.user)
	expect(tc, "org", r.org)
	expect(tc, "key", r.key)
	expect(tc, "key_name", r.key_name)
	expect(tc, "route", r.route)
	expect(tc, "headers", object.get(r, "headers", null))
	expect_body(tc, json.unmarshal(object.get(r, "body", "null")))
}

# A case's body lists the fields it checks; the body may hold more (reasons, key, key_name).
expect_body(tc, _) if not "body" in object.keys(tc)

expect_body(tc, body) if {
	every k, v in tc.body {
		body[k] == v
	}
}

# Allowed: headers, no body, 200, no reasons. Denied: a body, no headers, a reason, 401 or 403.
test_response_shape[tc.note] if {
	some tc in cases
	r := envoy.response with input as tc.input with data.keygate.db as fixture.db with time.now_ns as now
	_shape(r)
}

_shape(r) if {
	r.allowed
	r.http_status == 200
	r.reasons == []
	r.headers
	not r.body
}

_shape(r) if {
	not r.allowed
	r.http_status in {401, 403}
	r.reason == r.reasons[0]
	body := json.unmarshal(r.body)
	body.reason == r.reason
	body.reasons == r.reasons
	object.get(body, "key", "") == r.key
	object.get(body, "key_name", "") == r.key_name
	r.headers["content-type"] == "application/json"
	www_authenticate(r)
}

www_authenticate(r) if {
	r.http_status == 401
	r.headers["www-authenticate"] == `Bearer realm="keygate"`
}

www_authenticate(r) if {
	r.http_status == 403
	not r.headers["www-authenticate"]
}

# The snake_case spelling keygate accepted before the opa-envoy-plugin shape keeps working.
test_snake_case_input_still_works if {
	snake := {
		"attributes": {
			"request": {"http": {"method": "GET", "path": "/api/identity/orgs/org-a/teams", "headers": {}}},
			"context_extensions": {"service": "identity"},
			"metadata_context": {"filter_metadata": {"envoy.filters.http.jwt_authn": {"jwt_payload": {"sub": "alice"}}}},
		},
		"parsed_path": ["api", "identity", "orgs", "org-a", "teams"],
	}
	camel := req("identity", "GET", "/api/identity/orgs/org-a/teams", jwt({"sub": "alice"}))
	r1 := envoy.response with input as snake with data.keygate.db as fixture.db with time.now_ns as now
	r2 := envoy.response with input as camel with data.keygate.db as fixture.db with time.now_ns as now
	r1 == r2
	r1.user == "alice"
	r1.route != ""
}

# Under a stock opa-envoy-plugin the input keeps the client's x-keygate-* headers: an allow removes them.
test_spoofed_headers_removed_on_allow if {
	request := object.union(
		req("identity", "GET", "/api/identity/orgs/org-a/teams", who("alice")),
		{"attributes": {"request": {"http": {"headers": {"x-current-orgid": "org-a", "X-Keygate-Admin": "1", "x-keygate-user": "root"}}}}},
	)
	r := envoy.response with input as request with data.keygate.db as fixture.db with time.now_ns as now
	r.allowed
	r.request_headers_to_remove == ["x-keygate-admin"]
	r.headers["x-keygate-user"] == "alice"
}

# routed answers a request whose route keygate authz matched in Go exactly as response answers the request.
routed_cases := [
	{
		"note": "allowed",
		"request": req("designs", "GET", "/api/designs/d-a1", org_header("ursula", "org-a")),
		"routed": {"query": {"user": "ursula", "org": "org-a", "key": "k-view-design", "resource": {"type": "design", "id": "d-a1"}}, "route": "/api/designs/{design}"},
	},
	{
		"note": "denied for no grant",
		"request": req("designs", "GET", "/api/designs/d-a2-private", org_header("mallory", "org-a")),
		"routed": {"query": {"user": "mallory", "org": "org-a", "key": "k-view-design", "resource": {"type": "design", "id": "d-a2-private"}}, "route": "/api/designs/{design}"},
	},
	{
		"note": "denied for a revoked token (401)",
		"request": req("designs", "GET", "/api/designs", object.union(org_header("ursula", "org-a"), as_token("ursula", "tok-ursula-revoked"))),
		"routed": {"query": {"user": "ursula", "token": "tok-ursula-revoked", "org": "org-a", "key": "k-view-design", "resource": null}, "route": "/api/designs"},
	},
]

test_routed_answers_like_response[tc.note] if {
	some tc in routed_cases
	full := envoy.response with input as tc.request with data.keygate.db as fixture.db with time.now_ns as now
	fast := envoy.routed with input as tc.routed with data.keygate.db as fixture.db with time.now_ns as now
	fast == full
}
