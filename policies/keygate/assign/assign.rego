# METADATA
# title: keygate role assignment
# description: |
#   May an actor assign (or unassign) a role to a user in an org (and team or workspace)?
#   One rule set serves decision (one role, from input.role) and assignable (every role):
#   _reasons(role, action) and _path(role, via) take the role as an argument.
#   Semantics: docs/decisions.md; data: docs/data-layout.md.
package keygate.assign

import data.keygate.db
import data.keygate.reason

# METADATA
# title: Assignment decision
# description: allow, reasons, via (the rule that allowed it, "" when denied) and assigned (does the target hold the role there).
# entrypoint: true
decision := {
	"allow": count(_decision_reasons) == 0,
	"reasons": reason.ordered(_decision_reasons),
	"via": _via_out,
	"assigned": _assigned_out,
}

# METADATA
# title: Assignable roles
# description: The sorted role ids the actor may assign to input.user in input.org (and input.team / input.workspace).
# entrypoint: true
assignable := sort([role |
	some role, r in db.roles
	r.org in {"", _org_id}
	count(_reasons(role, "assign")) == 0
])

# ---------------------------------------------------------------------------
# Inputs.

_actor_id := input.actor if _non_empty(input.actor)

_user_id := input.user if _non_empty(input.user)

_org_id := input.org if _non_empty(input.org)

_team_id := input.team if _non_empty(input.team)

_ws_id := input.workspace if _non_empty(input.workspace)

# The team / workspace of input, only when it belongs to the org. Like everything here, read
# through leaf references: an org, team or workspace object holds member maps that may be huge.
_team := _team_id if db.teams[_team_id].org == _org_id

_ws := _ws_id if db.workspaces[_ws_id].org == _org_id

_org := _org_id if db.orgs[_org_id].owner

# input.role: a role id (or "<org>/<name>"), then a default role's name, then a custom role of the org.
_role_id := id if {
	id := db.role_ids[input.role]
} else := id if {
	id := db.role_ids[concat("/", ["", input.role])]
} else := id if {
	id := db.role_ids[concat("/", [_org_id, input.role])]
}

_decision_reasons := _reasons(_role_id, _action)

_decision_reasons := _base_errors(_action) | {"unknown_role"} if not _role_id

# A missing action is an invalid one (the decision stays defined: no decision would mean deny, unexplained).
default _action := ""

_action := input.action

default _via_out := ""

_via_out := _via(_role_id) if count(_decision_reasons) == 0

default _assigned_out := false

_assigned_out if _assigned(_role_id)

# ---------------------------------------------------------------------------
# Roles by kind. Only the eight default roles are named; every other role is "custom".

# default role id -> its name (eight entries, computed once per query)
_default_names := {id: name | some name, id in db.system_roles}

_default(role, names) if _default_names[role] in names

_custom(role) if not _default_names[role]

_provider_role(role) if role == db.system_roles["Provider Admin"]

_scope(role) := db.roles[role].scope

# Does the target hold the role at the place named by input?
_assigned(role) if {
	_provider_role(role)
	db.provider_admins[input.user]
}

_assigned(role) if {
	_scope(role) == "organization"
	db.rolesets[db.orgs[_org].members[input.user]].roles[role]
}

_assigned(role) if {
	_scope(role) == "team"
	db.rolesets[db.teams[_team].roles[input.user]].roles[role]
}

_assigned(role) if {
	_scope(role) == "workspace"
	db.rolesets[db.workspaces[_ws].roles[input.user]].roles[role]
}

# ---------------------------------------------------------------------------
# Reasons to deny. Invariants first; not_permitted / escalation only when no invariant failed.

_base_errors(action) := {code |
	some code in ["missing_subject", "actor_deleted", "target_deleted", "invalid_action"]
	_base_error(action, code)
}

_base_error(_, "missing_subject") if not _actor_id

_base_error(_, "missing_subject") if not _user_id

_base_error(_, "actor_deleted") if db.deleted[input.actor]

_base_error(_, "target_deleted") if db.deleted[input.user]

_base_error(action, "invalid_action") if not action in {"assign", "unassign"}

_reasons(role, action) := errs if {
	errs := _base_errors(action) | {code | some code in _invariant_codes; _invariant(role, action, code)}
	count(errs) > 0
} else := set() if _permitted(role)

else := {"escalation"} if _escalation(role)

else := {"not_permitted"}

_invariant_codes := [
	"role_not_in_org", "missing_org", "unknown_org", "missing_team", "unknown_team", "team_not_in_org",
	"missing_workspace", "unknown_workspace", "workspace_not_in_org", "last_org_admin",
	"last_provider_admin", "free_plan_single_org",
]

_invariant(role, _, "role_not_in_org") if {
	db.roles[role].org != ""
	db.roles[role].org != _org_id
}

_invariant(role, _, "missing_org") if {
	not _provider_role(role)
	not _org_id
}

_invariant(role, _, "unknown_org") if {
	not _provider_role(role)
	_org_id
	not _org
}

_invariant(role, _, "missing_team") if {
	_scope(role) == "team"
	not _team_id
}

_invariant(role, _, "unknown_team") if {
	_scope(role) == "team"
	_team_id
	not db.teams[_team_id]
}

_invariant(role, _, "team_not_in_org") if {
	_scope(role) == "team"
	db.teams[_team_id].org != _org_id
}

_invariant(role, _, "missing_workspace") if {
	_scope(role) == "workspace"
	not _ws_id
}

_invariant(role, _, "unknown_workspace") if {
	_scope(role) == "workspace"
	_ws_id
	not db.workspaces[_ws_id]
}

_invariant(role, _, "workspace_not_in_org") if {
	_scope(role) == "workspace"
	db.workspaces[_ws_id].org != _org_id
}

_invariant(role, "unassign", "last_org_admin") if {
	_default(role, {"Organization Admin"})
	_assigned(role)
	db.orgs[_org].admins <= 1
}

_invariant(role, "unassign", "last_provider_admin") if {
	_provider_role(role)
	_assigned(role)
	count({u | some u, _ in db.provider_admins; not db.deleted[u]}) <= 1 # a deleted one administers nothing
}

_invariant(role, "assign", "free_plan_single_org") if {
	not _provider_role(role)
	home := db.free[input.user]
	home != ""
	home != _org_id
}

# ---------------------------------------------------------------------------
# Who may assign: one _path per row of the table in docs/decisions.md, named by its via.

_vias := [
	"provider_admin", "org_owner", "org_admin", "team_owner", "workspace_owner",
	"team_admin", "workspace_admin", "edit_user", "update_profile",
]

_permitted(role) if {
	some via in _vias
	_path(role, via)
}

_via(role) := [via | some via in _vias; _path(role, via)][0]

_path(_, "provider_admin") if db.provider_admins[input.actor]

_path(role, "org_owner") if {
	_default(role, {"Organization Admin", "Organization Billing Manager"})
	input.actor == db.orgs[_org].owner
}

_path(role, "org_admin") if {
	_default(role, {"Workspace Admin", "Workspace Manager", "Team Admin", "Team Manager", "User"})
	_org_admin
}

_path(role, "org_admin") if {
	_custom(role)
	_org_admin
	_target_in_org
}

_path(role, "team_owner") if {
	_default(role, {"Team Admin", "Team Manager"})
	input.actor == db.teams[_team].owner
}

_path(role, "workspace_owner") if {
	_default(role, {"Workspace Admin", "Workspace Manager"})
	input.actor == db.workspaces[_ws].owner
}

_path(role, "team_admin") if {
	_default(role, {"User"})
	db.orgs[_org].team_admins[input.actor]
}

_path(role, "team_admin") if {
	_custom(role)
	db.rolesets[db.teams[_team].roles[input.actor]].roles[db.system_roles["Team Admin"]]
	db.teams[_team].members[input.user]
}

_path(role, "workspace_admin") if {
	_default(role, {"User"})
	db.orgs[_org].workspace_admins[input.actor]
}

_path(role, "edit_user") if {
	_custom(role)
	some held in _edit_user_scopes
	_within(role, held)
}

_path(role, "update_profile") if {
	_custom(role)
	db.profile_admins[input.actor]
}

_escalation(role) if {
	_custom(role)
	count(_edit_user_scopes) > 0
}

_actor_org_rs := db.orgs[_org].members[input.actor]

_org_admin if db.rolesets[_actor_org_rs].roles[db.system_roles["Organization Admin"]]

_target_in_org if db.orgs[_org].members[input.user]

# The keys the actor may hand out through Edit User, one set per place where a custom role gives it
# Edit User (unrestricted): the org (target a member of the org), the input team (target a team member).
_edit_user_scopes contains _actor_org_keys if {
	_edit_user_in(_actor_org_rs)
	_target_in_org
}

_edit_user_scopes contains object.union(_actor_org_keys, db.rolesets[rs].keys) if {
	rs := db.teams[_team].roles[input.actor]
	_edit_user_in(rs)
	db.teams[_team].members[input.user]
}

_edit_user_in(rs) if {
	some role, _ in db.rolesets[rs].roles
	_custom(role)
	db.roles[role].keys[db.key_ids["Edit User"]] == 0
}

_actor_org_keys := db.rolesets[_actor_org_rs].keys

_actor_org_keys := {} if not _actor_org_rs

# Every key of the role is held by the actor: no escalation.
_within(role, held) if {
	every key, _ in db.roles[role].keys {
		key in object.keys(held)
	}
}

_non_empty(x) if {
	is_string(x)
	x != ""
}
