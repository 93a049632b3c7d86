# METADATA
# title: keygate authorization
# description: |
#   May a subject (user or token) use a key in an organization, optionally on a resource?
#   Reads only data.keygate.db (docs/data-layout.md); the semantics are docs/decisions.md.
#
#   Performance: every reference into data.keygate.db ends at a small value (a leaf, a role
#   set, a list of keychains), never at an org, team or workspace object, whose member maps
#   may hold a million users (OPA's default store converts what it reads to AST on each read).
#   allow takes a lean path (_valid, then the cheapest grants first, with early exit); the
#   error sets behind reasons and the grants list are only evaluated when asked for.
package keygate.authz

import data.keygate.db
import data.keygate.reason

# METADATA
# title: Authorization decision
# description: allow, reasons, the grants that allow it, and the resolved user, org and key id.
# entrypoint: true
decision := {
	"allow": true,
	"reasons": [],
	"grants": db.rolesets[n].open_grants[key],
	"user": user,
	"org": org,
	"key": key,
} if {
	# Fast path: a user asking without a resource for a key an org role grants unrestricted. The input is
	# exactly {user, org, key} (one unification: no token, no resource, nothing else; any other input takes
	# the general path). rolesets[n].fast never lists Delete or Create Organization, and a deleted user's or a
	# Provider Admin's membership points at a role set twin with no fast entries (docs/data-layout.md), so the
	# org role set is the only grant source here; its unrestricted grant paths are precomputed in Rego's sort
	# order. Same object as the general path (TestFastPathsMatchGeneralPath).
	input = {"user": user, "org": org, "key": name}
	n := db.orgs[org].members[user]
	key := db.rolesets[n].fast[name]
} else := {
	"allow": false,
	"reasons": d.reasons,
	"grants": [],
	"user": user,
	"org": org,
	"key": d.key,
} if {
	# Fast denial: the same shape of input, for a key the member's role set does not grant unrestricted
	# (rolesets[n].deny holds the reason: no_grant, owner_only, owner_required), from a member who does not
	# own the org (the owner holds Delete Organization). Nothing else can grant it without a resource.
	input = {"user": user, "org": org, "key": name}
	d := db.rolesets[db.orgs[org].members[user]].deny[name]
	db.orgs[org].owner != user
} else := {
	"allow": allow,
	"reasons": reasons,
	"grants": grants,
	"user": _out_user,
	"org": _out_org,
	"key": _out_key,
}

# METADATA
# title: Authorization allow
# description: The bare boolean of the decision.
# entrypoint: true
default allow := false

# Fast paths: a key an org role grants unrestricted (rolesets[n].fast; see decision), the most common
# requests, one body each so the hot path is a handful of lookups. Same semantics as the general path
# (tested: allow == decision.allow, and TestFastPathsMatchGeneralPath).
allow if {
	input = {"user": user, "org": org, "key": key}
	db.rolesets[db.orgs[org].members[user]].fast[key]
}

# The sidecar's input for a user with one of keygate's tokens (envoy.rego and internal/sidecar/fast.go).
allow if {
	input = {"user": user, "token": token, "org": org, "key": key}
	t := db.tokens[token]
	t.user == user
	t.revoked == false
	t.expires_ns == 0
	db.rolesets[db.orgs[org].members[user]].fast[key]
}

allow if {
	not input.token
	db.rolesets[db.orgs[input.org].members[input.user]].fast[input.key]
	_fast_resource_in_org
}

allow if {
	token := db.tokens[input.token]
	token.revoked == false
	token.expires_ns == 0
	user := token.user
	object.get(input, "user", user) == user
	db.rolesets[db.orgs[input.org].members[user]].fast[input.key]
	_fast_resource_ok
}

allow if {
	token := db.tokens[input.token]
	token.revoked == false
	token.expires_ns >= time.now_ns()
	user := token.user
	object.get(input, "user", user) == user
	db.rolesets[db.orgs[input.org].members[user]].fast[input.key]
	_fast_resource_ok
}

_fast_resource_ok if not input.resource

_fast_resource_ok if _fast_resource_in_org

_fast_resource_in_org if {
	input.resource.type == "organization"
	input.resource.id == input.org
}

_fast_resource_in_org if {
	input.resource.type == "team"
	db.teams[input.resource.id].org == input.org
}

_fast_resource_in_org if {
	input.resource.type == "workspace"
	db.workspaces[input.resource.id].org == input.org
}

_fast_resource_in_org if {
	input.resource.type == "design"
	db.designs[input.resource.id].org == input.org
}

_fast_resource_in_org if {
	input.resource.type == "user"
	is_string(input.resource.id)
	input.resource.id != ""
}

# Fast path: a Provider Admin.
allow if {
	db.provider_admins[_ok_user]
	_org_exists
	_key_id
	_resource_ok
}

# General path (not for the inputs decision's fast denial settles: nothing can grant them).
allow if {
	not _fast_denied
	_valid
	_granted
	not _free_blocked
}

_fast_denied if {
	input = {"user": user, "org": org, "key": name}
	db.rolesets[db.orgs[org].members[user]].deny[name]
	db.orgs[org].owner != user
}

# METADATA
# title: Reasons of the decision
# description: Reason codes in canonical order; empty when allowed.
# entrypoint: true
reasons := [] if allow

else := reason.ordered(_errors) if count(_errors) > 0

else := [_denial]

# METADATA
# title: Grants
# description: Every path that grants the key and applies; empty when denied.
default grants := []

# Fast path: decision's (same conditions, same list as the general path).
grants := db.rolesets[n].open_grants[key] if {
	input = {"user": user, "org": org, "key": name}
	n := db.orgs[org].members[user]
	key := db.rolesets[n].fast[name]
} else := sort(_grant_set) if {
	_valid
	not _free_blocked
}

# METADATA
# title: Keys of the subject in the org
# description: Sorted key ids the subject holds in input.org through org roles (all for a Provider Admin).
# entrypoint: true
keys := sort(object.keys(key_grants))

# METADATA
# title: Key grants of the subject in the org
# description: "{key id: {owner_only: bool}} for the keys listed by keys."
# entrypoint: true
default key_grants := {}

key_grants := {k: {"owner_only": false} | some k, _ in db.keys} if {
	_org_exists
	db.provider_admins[_ok_user]
} else := object.union(
	{k: {"owner_only": level == 1} | some k, level in _org_keys; k != _delete_key; k != _blocked_key},
	_owner_keys,
) if {
	_ok_user
	_org_exists
}

# METADATA
# title: Subject reasons
# description: The reason codes about the subject alone (input user/token); used by the Envoy policy.
subject_reasons := reason.ordered(_subject_errors)

# ---------------------------------------------------------------------------
# The lean path. _valid holds exactly when _errors is empty (tested).

default _valid := false

_valid if {
	_ok_user
	_org_exists
	_key_id
	_resource_ok
}

# ---------------------------------------------------------------------------
# 1. Subject: a token resolves to its user; a user given beside a token must be that user.
#    An empty string counts as absent.

_token_given if input.token != ""

_user_given if {
	is_string(input.user)
	input.user != ""
}

_token := db.tokens[input.token]

_user := _token.user if _token_given

else := input.user if _user_given

# The subject's user when rule 1 passes: a user given without a token, or a live token (of
# input.user, when given) whose user is not deleted. Undefined otherwise. One rule, no joins.
_ok_user := input.user if {
	not _token_given
	_user_given
	not db.deleted[input.user]
} else := _token.user if {
	not _token.revoked
	_token.expires_ns == 0
	not _token_user_mismatch
	not db.deleted[_token.user]
} else := _token.user if {
	not _token.revoked
	_token.expires_ns >= time.now_ns()
	not _token_user_mismatch
	not db.deleted[_token.user]
}

_unexpired if _token.expires_ns == 0

_unexpired if _token.expires_ns >= time.now_ns()

_token_user_mismatch if {
	_user_given
	input.user != _token.user
}

_subject_errors contains "missing_subject" if {
	not _token_given
	not _user_given
}

_subject_errors contains "unknown_token" if {
	_token_given
	not _token
}

_subject_errors contains "unknown_token" if _token_user_mismatch

_subject_errors contains "token_revoked" if _token.revoked

_subject_errors contains "token_expired" if {
	_token
	not _unexpired
}

_subject_errors contains "user_deleted" if db.deleted[_user]

# ---------------------------------------------------------------------------
# 2. Org and key.

_org_exists if db.orgs[input.org].owner

_key_id := db.key_ids[input.key]

_errors contains code if some code in _subject_errors

_org_given if input.org != ""

_key_given if input.key != ""

_errors contains "missing_org" if not _org_given

_errors contains "unknown_org" if {
	_org_given
	not _org_exists
}

_errors contains "missing_key" if not _key_given

_errors contains "unknown_key" if {
	_key_given
	not _key_id
}

default _delete_key := ""

_delete_key := db.key_ids["Delete Organization"]

_delete_org if _key_id == _delete_key

# A Free-plan user belongs to a single organization (the users document): one who already belongs to one may
# not use Create Organization (Provider Admins aside, who may do everything). db.free[user] is their org, ""
# while they have none.
default _blocked_key := ""

_blocked_key := db.key_ids["Create Organization"] if {
	db.free[_user] != ""
	not db.provider_admins[_user]
}

_free_blocked if _key_id == _blocked_key

# ---------------------------------------------------------------------------
# 3. Resource (optional): {type, id}. A user resource has no org and is owned by itself.

_res_given if input.resource != null

_res := input.resource if {
	input.resource.type in {"organization", "team", "workspace", "design", "user"}
	is_string(input.resource.id)
	input.resource.id != ""
}

_res_owner := db.designs[_res.id].owner if _res.type == "design"

_res_owner := db.workspaces[_res.id].owner if _res.type == "workspace"

_res_owner := db.teams[_res.id].owner if _res.type == "team"

_res_owner := db.orgs[_res.id].owner if _res.type == "organization"

_res_owner := _res.id if _res.type == "user"

_res_org := db.designs[_res.id].org if _res.type == "design"

_res_org := db.workspaces[_res.id].org if _res.type == "workspace"

_res_org := db.teams[_res.id].org if _res.type == "team"

_res_org := _res.id if {
	_res.type == "organization"
	db.orgs[_res.id].owner
}

_resource_ok if not _res_given

_resource_ok if _res_org == input.org

_resource_ok if _res.type == "user"

_owns if _res_owner == _user

_errors contains "invalid_resource" if {
	_res_given
	not _res
}

_errors contains "resource_not_found" if {
	_res
	not _res_owner
}

_errors contains "resource_not_in_org" if _res_org != input.org

# ---------------------------------------------------------------------------
# 4-10. Grant levels per source: 0 = unrestricted, 1 = owner-only, undefined = nothing.

_org_level := db.rolesets[db.orgs[input.org].members[_user]].keys[_key_id]

_team_level := db.rolesets[db.teams[_res.id].roles[_user]].keys[_key_id] if _res.type == "team"

_ws_id := _res.id if _res.type == "workspace"

_ws_id := db.designs[_res.id].workspace if _res.type == "design"

_ws_level := db.rolesets[db.workspaces[_ws_id].roles[_user]].keys[_key_id]

_collaborator if db.workspaces[_ws_id].members[_user]

_collaborator if {
	some team, _ in db.workspaces[_ws_id].teams
	db.teams[team].members[_user]
}

_collab_level := db.collaborator_keys[_key_id] if _collaborator

_public_design if {
	_res.type == "design"
	db.designs[_res.id].visibility in {"public", "published"}
	db.keys[_key_id].function == "read"
}

_owner_deletes_org if {
	_delete_org
	_user == db.orgs[input.org].owner
}

# The grants allow's general path checks (its fast paths cover the common cases again, faster).
# Early exit: the first body that succeeds decides, cheap paths first.
_granted if _owner_deletes_org

_granted if {
	not _delete_org
	_org_level == 0
}

_granted if {
	not _delete_org
	_org_level == 1
	_owns
}

_granted if {
	not _delete_org
	_team_level == 0
}

_granted if {
	not _delete_org
	_ws_level == 0
}

_granted if {
	not _delete_org
	_public_design
}

_granted if {
	not _delete_org
	_collab_level == 0
}

_granted if {
	not _delete_org
	_owner_only_level
	_owns
}

_owner_only_level if _org_level == 1

_owner_only_level if _team_level == 1

_owner_only_level if _ws_level == 1

_owner_only_level if _collab_level == 1

# 8, 7, 11: why no grant applied.
_denial := "owner_required" if _delete_org

else := "free_plan_single_org" if _free_blocked

else := "owner_only" if _owner_only_level

else := "no_grant"

# ---------------------------------------------------------------------------
# Grants: the explanation, built only for decision. A grant is listed when it applies.

_applies(0)

_applies(1) if _owns

_key_ref := {"id": _key_id, "name": db.keys[_key_id].name}

# The role grant paths are precomputed per role set and key (docs/data-layout.md): a lookup, no walk.
_grant_set contains g if {
	db.provider_admins[_user]
	some g in db.provider_grants[_key_id]
}

_grant_set contains {"via": "owner", "key": _key_ref, "owner_only": false} if _owner_deletes_org

_grant_set contains g if {
	not _delete_org
	some g in db.rolesets[db.orgs[input.org].members[_user]].grants[_key_id]
	_grant_applies(g)
}

_grant_set contains object.union(g, {"team": _res.id}) if {
	not _delete_org
	_res.type == "team"
	some g in db.rolesets[db.teams[_res.id].roles[_user]].grants[_key_id]
	_grant_applies(g)
}

_grant_set contains object.union(g, {"workspace": _ws_id}) if {
	not _delete_org
	some g in db.rolesets[db.workspaces[_ws_id].roles[_user]].grants[_key_id]
	_grant_applies(g)
}

_grant_set contains {"via": "collaborator", "workspace": _ws_id, "key": _key_ref, "owner_only": _collab_level == 1} if {
	not _delete_org
	_applies(_collab_level)
}

_grant_set contains {"via": "public_design", "design": _res.id, "key": _key_ref, "owner_only": false} if {
	not _delete_org
	_public_design
}

_grant_applies(g) if g.owner_only == false

_grant_applies(g) if {
	g.owner_only == true
	_owns
}

# ---------------------------------------------------------------------------
# keys / key_grants: the owner holds Delete Organization without a role; nobody else does.

_org_keys := db.rolesets[db.orgs[input.org].members[_user]].keys

_org_keys := {} if not db.orgs[input.org].members[_user]

_owner_keys := {_delete_key: {"owner_only": false}} if _user == db.orgs[input.org].owner

else := {}

# ---------------------------------------------------------------------------

default _out_user := ""

_out_user := _user

default _out_org := ""

_out_org := input.org if is_string(input.org)

default _out_key := ""

_out_key := _key_id
