# METADATA
# title: keygate role assignment
# description: |
#   May an actor assign (or unassign) a role to a user in an org (and team or workspace)?
#   Every rule below is about the one role of input.role; assignable asks decision once per role.
#   Each rule reads leaves of the data (an org's, a team's member maps may be huge), never whole objects.
#   Semantics, in the order of the rules below: docs/decisions.md; data: docs/data-layout.md.
package keygate.assign

import data.keygate.db
import data.keygate.reason

# METADATA
# title: Assignment decision
# description: |
#   allow, reasons, via (the rule that allowed it, "" when denied), team (the team that rule went through,
#   "" when none) and assigned (does the target hold the role there).
# entrypoint: true
decision := _denied(reason.ordered(_errors)) if {
	count(_errors) > 0
} else := {"allow": true, "reasons": [], "via": _via, "team": _via_team, "assigned": _assigned} if {
	_via
} else := _denied(["escalation"]) if {
	_escalation
} else := _denied(["not_permitted"])

_denied(reasons) := {"allow": false, "reasons": reasons, "via": "", "team": "", "assigned": _assigned}

# METADATA
# title: Assignable roles
# description: The sorted role ids the actor may assign to input.user in input.org (and input.team / input.workspace).
# entrypoint: true
assignable := sort([role |
	some role, r in db.roles
	r.org in {"", _org_id}
	decision.allow with input.role as role with input.action as "assign"
])

# ---------------------------------------------------------------------------
# Inputs.

# input as an object ({} for anything else), for object.get.
_input := input if is_object(input)

else := {}

_org_id := input.org if {
	is_string(input.org)
	input.org != ""
}

_team_id := input.team if {
	is_string(input.team)
	input.team != ""
}

_ws_id := input.workspace if {
	is_string(input.workspace)
	input.workspace != ""
}

# The org, team and workspace of input, only when known (and, for team and workspace, of the org).
_org := _org_id if db.orgs[_org_id].owner

_team := _team_id if db.teams[_team_id].org == _org_id

_ws := _ws_id if db.workspaces[_ws_id].org == _org_id

# input.role: a role id (or "<org>/<name>"), then a default role's name, then a custom role of the org.
_role_id := id if {
	id := db.role_ids[input.role]
} else := id if {
	id := db.system_roles[input.role] # a default role's name, without building "/<name>"
} else := id if {
	id := db.role_ids[concat("/", ["", input.role])]
} else := id if {
	id := db.role_ids[concat("/", [_org_id, input.role])]
}

_role := db.roles[_role_id]

# The name of the role when it is one of the eight default roles; every other role is custom (`not
# _default_role` below, where the role is known).
_default_role := _role.name if db.system_roles[_role.name] == _role_id

# Is the key-subset check of the edit_user path on? A deployment-wide setting (docs/decisions.md).
_key_subset if db.settings.assign_key_subset == true

# ---------------------------------------------------------------------------
# decision, above, answers the invariants first (all that fail), then the first rule that permits, then
# escalation or not_permitted. Does the target hold the role at the place named by input?
default _assigned := false

_assigned if {
	_default_role == "Provider Admin"
	db.provider_admins[input.user]
}

_assigned if {
	_role.scope == "organization"
	db.rolesets[db.orgs[_org].members[input.user]].roles[_role_id]
}

_assigned if {
	_role.scope == "team"
	db.rolesets[db.teams[_team].roles[input.user]].roles[_role_id]
}

_assigned if {
	_role.scope == "workspace"
	db.rolesets[db.workspaces[_ws].roles[input.user]].roles[_role_id]
}

# ---------------------------------------------------------------------------
# Invariants and malformed input.

# actor and user: non-empty strings (object.get of _input: a missing field, see invalid_action below).
_errors contains "missing_subject" if not is_string(object.get(_input, "actor", null))

_errors contains "missing_subject" if input.actor == ""

_errors contains "missing_subject" if not is_string(object.get(_input, "user", null))

_errors contains "missing_subject" if input.user == ""

_errors contains "actor_deleted" if db.deleted[input.actor]

_errors contains "target_deleted" if db.deleted[input.user]

# A missing action is an invalid one. (Through object.get: with OPA 1.22, `not input.action in {...}` is undefined,
# not true, when input.action is missing; tests "missing action is an invalid action", "input that is not an
# object is denied, not an error".)
_errors contains "invalid_action" if not object.get(_input, "action", "") in {"assign", "unassign"}

_errors contains "unknown_role" if not _role_id

_errors contains "role_not_in_org" if {
	_role.org != ""
	_role.org != _org_id
}

# The place the role is given at: one error at most for each of the org, the team and the workspace.
_errors contains _org_error if _default_role != "Provider Admin" # every role but Provider Admin lives in an org

_errors contains _org_error if {
	_role
	not _default_role
}

_errors contains _team_error if _role.scope == "team"

_errors contains _ws_error if _role.scope == "workspace"

_org_error := "missing_org" if {
	not _org_id
} else := "unknown_org" if {
	not _org
}

_team_error := "missing_team" if {
	not _team_id
} else := "unknown_team" if {
	not db.teams[_team_id].org
} else := "team_not_in_org" if {
	db.teams[_team_id].org != _org_id
}

_ws_error := "missing_workspace" if {
	not _ws_id
} else := "unknown_workspace" if {
	not db.workspaces[_ws_id].org
} else := "workspace_not_in_org" if {
	db.workspaces[_ws_id].org != _org_id
}

# (input.action == ..., first: the rule index skips these bodies for the other action.)
_errors contains "last_org_admin" if {
	input.action == "unassign"
	_default_role == "Organization Admin"
	_assigned
	db.orgs[_org].admins <= 1
}

_errors contains "last_provider_admin" if {
	input.action == "unassign"
	_default_role == "Provider Admin"
	_assigned
	count({u | some u, _ in db.provider_admins; not db.deleted[u]}) <= 1 # a deleted one administers nothing
}

_errors contains "free_plan_single_org" if {
	input.action == "assign"
	not _default_role == "Provider Admin"
	_role
	home := db.free[input.user]
	home != ""
	home != _org_id
}

# ---------------------------------------------------------------------------
# Who may assign: one rule per row of the table in docs/decisions.md, tried in this order; via names the first
# that permits.

_via := "provider_admin" if {
	db.provider_admins[input.actor]
} else := "org_owner" if {
	_default_role in {"Organization Admin", "Organization Billing Manager"}
	input.actor == db.orgs[_org].owner
} else := "org_admin" if {
	_default_role in {"Workspace Admin", "Workspace Manager", "Team Admin", "Team Manager", "User"}
	_actor_org_admin
} else := "org_admin" if {
	not _default_role
	_actor_org_admin
	_target_in_org
} else := "team_owner" if {
	_default_role in {"Team Admin", "Team Manager"}
	input.actor == db.teams[_team].owner
} else := "workspace_owner" if {
	_default_role in {"Workspace Admin", "Workspace Manager"}
	input.actor == db.workspaces[_ws].owner
} else := "team_admin" if {
	_team_admin_team
} else := "workspace_admin" if {
	_default_role == "User"
	db.orgs[_org].workspace_admins[input.actor]
} else := "edit_user" if {
	_edit_user_org
} else := "edit_user" if {
	_edit_user_team
} else := "update_profile" if {
	not _default_role
	db.profile_admins[input.actor]
}

# The team via went through ("" for none).
default _via_team := ""

_via_team := _team if {
	_via == "team_owner"
} else := _team_admin_team if {
	_via == "team_admin"
} else := _edit_user_team if {
	_via == "edit_user"
	not _edit_user_org
}

# The team through which the actor, a Team Admin there, may give the role: for User, the first (by id) team of
# the org where the actor is Team Admin; for a custom role, input.team when given, else the first team of the
# org where the actor is Team Admin and the target a member.
_team_admin_team := min({t | some t in _actor_teams; _team_admin_on(t)}) if _default_role == "User"

_team_admin_team := min({t | some t in _teams_to_search; _team_admin_on(t); db.teams[t].members[input.user]}) if not _default_role

# Edit User through a custom org role: custom roles for members of the org.
_edit_user_org if {
	not _default_role
	db.rolesets[_actor_org_rs].edit_user
	_target_in_org
	_within_held_keys({})
}

# Edit User through a custom team role: custom roles for members of that team (input.team when given, else the
# first by id); the actor's keys there are its org keys and its keys on the team.
_edit_user_team := min({t |
	some t in _teams_to_search
	_edit_user_on(t)
	_within_held_keys(db.rolesets[db.teams[t].roles[input.actor]].keys)
}) if not _default_role

# With the key-subset setting, an Edit User path that hands out a key the actor does not hold is an escalation.
_escalation if {
	not _default_role
	_key_subset
	_edit_user_applies
}

_edit_user_applies if {
	db.rolesets[_actor_org_rs].edit_user
	_target_in_org
}

_edit_user_applies if {
	some t in _teams_to_search
	_edit_user_on(t)
}

# ---------------------------------------------------------------------------
# Helpers.

_actor_org_rs := db.orgs[_org].members[input.actor]

_actor_org_admin if db.rolesets[_actor_org_rs].roles[db.system_roles["Organization Admin"]]

_target_in_org if db.orgs[_org].members[input.user]

# The teams of the org where the actor holds a team role (sorted ids).
_actor_teams := db.orgs[_org].role_teams[input.actor]

# The teams a custom role may be given through: input.team when given (and of the org), else the actor's teams.
_teams_to_search := {t | t := _team} if _team_id

else := {t | some t in _actor_teams}

_team_admin_on(t) if db.rolesets[db.teams[t].roles[input.actor]].roles[db.system_roles["Team Admin"]]

_edit_user_on(t) if {
	db.rolesets[db.teams[t].roles[input.actor]].edit_user
	db.teams[t].members[input.user]
}

# Without the key-subset setting every custom role may be handed out; with it, only one whose every key the
# actor holds (at any level) in the org or in extra.
_within_held_keys(_) if not _key_subset

_within_held_keys(extra) if {
	_key_subset
	every key, _ in _role.keys {
		_holds(key, extra)
	}
}

_holds(key, _) if _actor_org_keys[key] # values are 0 or 1: defined means held

_holds(key, extra) if extra[key]

default _actor_org_keys := {}

_actor_org_keys := db.rolesets[_actor_org_rs].keys
