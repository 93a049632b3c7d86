package keygate.assign_test

import data.keygate.assign as policy
import data.keygate.fixture
import data.keygate.reason

db(tc) := object.union(fixture.db, object.get(tc, "patch", {}))

# Optional expectations: a case checks a field only when it names it.
expect(tc, field, _) if not field in object.keys(tc)

expect(tc, field, actual) if tc[field] == actual

# req(actor, role, user, org) is an assign input; object.union adds team, workspace or action.
req(actor, role, user, org) := {"actor": actor, "action": "assign", "role": role, "user": user, "org": org}

cases := [
	# Provider Admin: Provider Admins assign and unassign it.
	{
		"note": "provider admin may assign Provider Admin",
		"input": {"actor": "victor", "action": "assign", "role": "Provider Admin", "user": "ursula"},
		"allow": true, "reasons": [], "via": "provider_admin", "assigned": false,
	},
	{
		"note": "org owner may not assign Provider Admin",
		"input": req("alice", "Provider Admin", "ursula", "org-a"),
		"allow": false, "reasons": ["not_permitted"], "via": "",
	},
	{
		"note": "missing action is an invalid action",
		"input": {"actor": "victor", "role": "User", "user": "ursula", "org": "org-a"},
		"allow": false, "reasons": ["invalid_action"],
	},
	{
		"note": "last provider admin cannot be unassigned",
		"input": {"actor": "victor", "action": "unassign", "role": "Provider Admin", "user": "victor"},
		"allow": false, "reasons": ["last_provider_admin"], "assigned": true,
	},
	{
		"note": "a deleted provider admin does not count towards the last one",
		"input": {"actor": "victor", "action": "unassign", "role": "Provider Admin", "user": "victor"},
		"patch": {"provider_admins": {"victor": true, "dan": true}},
		"allow": false, "reasons": ["last_provider_admin"], "assigned": true,
	},
	{
		"note": "provider admin may unassign another provider admin",
		"input": {"actor": "victor", "action": "unassign", "role": "Provider Admin", "user": "tina"},
		"patch": {"provider_admins": {"tina": true}},
		"allow": true, "reasons": [], "via": "provider_admin", "assigned": true,
	},
	{
		"note": "unassigning Provider Admin from a non-holder is answered by permission",
		"input": {"actor": "victor", "action": "unassign", "role": "Provider Admin", "user": "ursula"},
		"allow": true, "reasons": [], "assigned": false,
	},
	{
		"note": "provider admin may assign in any org",
		"input": req("victor", "Organization Admin", "xavier", "org-b"),
		"allow": true, "reasons": [], "via": "provider_admin",
	},
	# Organization Admin and Billing Manager: the org owner.
	{
		"note": "org owner may assign Organization Admin",
		"input": req("alice", "Organization Admin", "ursula", "org-a"),
		"allow": true, "reasons": [], "via": "org_owner", "assigned": false,
	},
	{
		"note": "org admin may not assign Organization Admin",
		"input": req("bob", "Organization Admin", "ursula", "org-a"),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "org owner may unassign Organization Admin",
		"input": object.union(req("alice", "Organization Admin", "bob", "org-a"), {"action": "unassign"}),
		"allow": true, "reasons": [], "via": "org_owner", "assigned": true,
	},
	{
		"note": "org admin may not unassign Organization Admin",
		"input": object.union(req("bob", "Organization Admin", "alice", "org-a"), {"action": "unassign"}),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "last org admin cannot be unassigned",
		"input": object.union(req("boris", "Organization Admin", "boris", "org-b"), {"action": "unassign"}),
		"allow": false, "reasons": ["last_org_admin"], "assigned": true,
	},
	{
		"note": "org owner of another org may not assign Organization Admin here",
		"input": req("boris", "Organization Admin", "ursula", "org-a"),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "org owner may assign Organization Billing Manager",
		"input": req("alice", "Organization Billing Manager", "ursula", "org-a"),
		"allow": true, "reasons": [], "via": "org_owner",
	},
	{
		"note": "org admin may not assign Organization Billing Manager",
		"input": req("bob", "Organization Billing Manager", "ursula", "org-a"),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "org owner may unassign Organization Billing Manager",
		"input": object.union(req("alice", "Organization Billing Manager", "carol", "org-a"), {"action": "unassign"}),
		"allow": true, "reasons": [], "via": "org_owner", "assigned": true,
	},
	# Workspace Admin and Manager: org admins of the workspace's org, the workspace's owner.
	{
		"note": "org admin may assign Workspace Admin",
		"input": object.union(req("bob", "Workspace Admin", "ursula", "org-a"), {"workspace": "w-a1"}),
		"allow": true, "reasons": [], "via": "org_admin",
	},
	{
		"note": "workspace owner may assign Workspace Manager",
		"input": object.union(req("will", "Workspace Manager", "ursula", "org-a"), {"workspace": "w-a2"}),
		"allow": true, "reasons": [], "via": "workspace_owner",
	},
	{
		"note": "workspace owner may unassign Workspace Admin",
		"input": object.union(req("alice", "Workspace Admin", "wendy", "org-a"), {"workspace": "w-a1", "action": "unassign"}),
		"allow": true, "reasons": [], "via": "org_admin", "assigned": true,
	},
	{
		"note": "workspace owner of another workspace may not assign Workspace Admin",
		"input": object.union(req("will", "Workspace Admin", "ursula", "org-a"), {"workspace": "w-a1"}),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "workspace admin may not assign Workspace Admin",
		"input": object.union(req("wendy", "Workspace Admin", "ursula", "org-a"), {"workspace": "w-a1"}),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "workspace role needs a workspace",
		"input": req("bob", "Workspace Admin", "ursula", "org-a"),
		"allow": false, "reasons": ["missing_workspace"],
	},
	{
		"note": "workspace role needs a known workspace",
		"input": object.union(req("bob", "Workspace Admin", "ursula", "org-a"), {"workspace": "w-nope"}),
		"allow": false, "reasons": ["unknown_workspace"],
	},
	{
		"note": "workspace role needs a workspace of the org",
		"input": object.union(req("bob", "Workspace Admin", "ursula", "org-a"), {"workspace": "w-b1"}),
		"allow": false, "reasons": ["workspace_not_in_org"],
	},
	# Team Admin and Manager: org admins of the team's org, the team's owner.
	{
		"note": "team owner may assign Team Admin",
		"input": object.union(req("tom", "Team Admin", "ursula", "org-a"), {"team": "t-a2"}),
		"allow": true, "reasons": [], "via": "team_owner", "team": "t-a2",
	},
	{
		"note": "org admin may assign Team Manager",
		"input": object.union(req("bob", "Team Manager", "ursula", "org-a"), {"team": "t-a1"}),
		"allow": true, "reasons": [], "via": "org_admin",
	},
	{
		"note": "org admin may unassign Team Admin",
		"input": object.union(req("bob", "Team Admin", "tina", "org-a"), {"team": "t-a1", "action": "unassign"}),
		"allow": true, "reasons": [], "via": "org_admin", "assigned": true,
	},
	{
		"note": "team admin may not assign Team Admin",
		"input": object.union(req("tina", "Team Admin", "ursula", "org-a"), {"team": "t-a1"}),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "team owner of another team may not assign Team Admin",
		"input": object.union(req("tom", "Team Admin", "ursula", "org-a"), {"team": "t-a1"}),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "team role needs a team",
		"input": req("bob", "Team Admin", "ursula", "org-a"),
		"allow": false, "reasons": ["missing_team"],
	},
	{
		"note": "team role needs a known team",
		"input": object.union(req("bob", "Team Admin", "ursula", "org-a"), {"team": "t-nope"}),
		"allow": false, "reasons": ["unknown_team"],
	},
	{
		"note": "team role needs a team of the org",
		"input": object.union(req("bob", "Team Admin", "ursula", "org-a"), {"team": "t-b1"}),
		"allow": false, "reasons": ["team_not_in_org"],
	},
	# User: org admins, workspace admins and team admins of the org.
	{
		"note": "org admin may assign User",
		"input": req("bob", "User", "newbie", "org-a"),
		"allow": true, "reasons": [], "via": "org_admin",
	},
	{
		"note": "workspace admin may assign User",
		"input": req("wendy", "User", "newbie", "org-a"),
		"allow": true, "reasons": [], "via": "workspace_admin",
	},
	{
		"note": "team admin may assign User",
		"input": req("tina", "User", "newbie", "org-a"),
		"allow": true, "reasons": [], "via": "team_admin", "team": "t-a1",
	},
	{
		"note": "team admin may unassign User",
		"input": object.union(req("tina", "User", "ursula", "org-a"), {"action": "unassign"}),
		"allow": true, "reasons": [], "via": "team_admin", "assigned": true,
	},
	{
		"note": "billing manager may not assign User",
		"input": req("carol", "User", "newbie", "org-a"),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "plain user may not assign User",
		"input": req("ursula", "User", "newbie", "org-a"),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "org admin of another org may not assign User",
		"input": req("boris", "User", "newbie", "org-a"),
		"allow": false, "reasons": ["not_permitted"],
	},
	# Custom roles of the org.
	{
		"note": "team admin may assign a custom role to a member of their team",
		"input": object.union(req("tina", "Auditor", "ursula", "org-a"), {"team": "t-a1"}),
		"allow": true, "reasons": [], "via": "team_admin", "team": "t-a1",
	},
	{
		"note": "team admin may not assign a custom role to a non-member of their team",
		"input": object.union(req("tina", "Auditor", "will", "org-a"), {"team": "t-a1"}),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "org admin may assign a custom role to an org member",
		"input": req("bob", "Auditor", "ursula", "org-a"),
		"allow": true, "reasons": [], "via": "org_admin", "team": "",
	},
	{
		"note": "org admin may not assign a custom role to a non-member",
		"input": req("bob", "Auditor", "mallory", "org-a"),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "Edit User holder may assign a custom role to an org member",
		"input": req("hank", "HR", "ursula", "org-a"),
		"allow": true, "reasons": [], "via": "edit_user",
	},
	{
		"note": "Edit User holder may not assign a custom role to a non-member",
		"input": req("hank", "HR", "mallory", "org-a"),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "Edit User holder may not assign Organization Admin",
		"input": req("hank", "Organization Admin", "ursula", "org-a"),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "Edit User holder may not assign Organization Billing Manager",
		"input": req("hank", "Organization Billing Manager", "ursula", "org-a"),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "Edit User holder may not assign Provider Admin",
		"input": {"actor": "hank", "action": "assign", "role": "Provider Admin", "user": "ursula"},
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "Edit User holder may not assign User",
		"input": req("hank", "User", "newbie", "org-a"),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "Edit User through a custom team role may assign to members of that team",
		"input": object.union(req("lee", "HR", "ursula", "org-a"), {"team": "t-a1"}),
		"allow": true, "reasons": [], "via": "edit_user", "team": "t-a1",
	},
	{
		"note": "Edit User through a custom team role covers only members of that team",
		"input": object.union(req("lee", "HR", "will", "org-a"), {"team": "t-a1"}),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "Edit User through a custom team role assigns custom team roles on that team",
		"input": object.union(req("lee", "Team Lead", "ursula", "org-a"), {"team": "t-a1"}),
		"allow": true, "reasons": [], "via": "edit_user", "assigned": false,
	},
	{
		"note": "Edit User through a custom team role needs no org role",
		"input": object.union(req("nora", "HR", "ursula", "org-a"), {"team": "t-a1"}),
		"patch": {"teams": {"t-a1": {"members": {"nora": true}, "roles": {"nora": "7"}}}},
		"allow": true, "reasons": [], "via": "edit_user",
	},
	{
		"note": "Update Profile holder may assign custom roles in any org",
		"input": req("pat", "Auditor", "ursula", "org-a"),
		"allow": true, "reasons": [], "via": "update_profile",
	},
	{
		"note": "Update Profile holder may not assign Organization Admin",
		"input": req("pat", "Organization Admin", "ursula", "org-a"),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "Update Profile holder may not assign Organization Billing Manager",
		"input": req("pat", "Organization Billing Manager", "ursula", "org-a"),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "Update Profile holder may not assign Provider Admin",
		"input": {"actor": "pat", "action": "assign", "role": "Provider Admin", "user": "ursula"},
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "provider admin may assign a custom role",
		"input": req("victor", "Auditor", "mallory", "org-a"),
		"allow": true, "reasons": [], "via": "provider_admin",
	},
	{
		"note": "the first permitting rule in table order names via",
		"input": req("alice", "Auditor", "ursula", "org-a"),
		"allow": true, "reasons": [], "via": "org_admin",
	},
	# Role resolution.
	{
		"note": "role resolves by id",
		"input": req("alice", "r-org-admin", "ursula", "org-a"),
		"allow": true, "reasons": [],
	},
	{
		"note": "custom role of another org by id",
		"input": req("bob", "r-b-auditor", "ursula", "org-a"),
		"allow": false, "reasons": ["role_not_in_org"],
	},
	{
		"note": "custom role of another org by org and name",
		"input": req("victor", "org-b/Auditor", "ursula", "org-a"),
		"allow": false, "reasons": ["role_not_in_org"],
	},
	{
		"note": "custom role name resolves in the input org",
		"input": req("boris", "Auditor", "xavier", "org-b"),
		"allow": true, "reasons": [], "via": "org_admin",
	},
	{
		"note": "a role of no org that is not a default role resolves by its name and is custom",
		"input": req("bob", "Global Auditor", "ursula", "org-a"),
		"patch": {
			"roles": {"r-global": {
				"name": "Global Auditor", "scope": "organization", "org": "", "system": false,
				"keychains": ["kc-a-audit"], "keys": {"k-view-teams": 0},
			}},
			"role_ids": {"r-global": "r-global", "/Global Auditor": "r-global"},
		},
		"allow": true, "reasons": [], "via": "org_admin",
	},
	{
		"note": "unknown role",
		"input": req("bob", "Janitor", "ursula", "org-a"),
		"allow": false, "reasons": ["unknown_role"], "via": "", "assigned": false,
	},
	# Invariants.
	{
		"note": "deleted actor always denied",
		"input": req("dan", "User", "newbie", "org-a"),
		"allow": false, "reasons": ["actor_deleted"],
	},
	{
		"note": "deleted target always denied",
		"input": req("alice", "Organization Admin", "dan", "org-a"),
		"allow": false, "reasons": ["target_deleted"],
	},
	{
		"note": "deleted actor denied even as provider admin",
		"input": req("dan", "User", "newbie", "org-a"),
		"patch": {"provider_admins": {"dan": true}},
		"allow": false, "reasons": ["actor_deleted"],
	},
	{
		"note": "missing actor denied",
		"input": {"action": "assign", "role": "User", "user": "newbie", "org": "org-a"},
		"allow": false, "reasons": ["missing_subject"],
	},
	{
		"note": "input that is not an object is denied, not an error",
		"input": "alice",
		"allow": false, "reasons": ["missing_subject", "invalid_action", "unknown_role"],
	},
	{
		"note": "empty actor denied",
		"input": {"actor": "", "action": "assign", "role": "User", "user": "newbie", "org": "org-a"},
		"allow": false, "reasons": ["missing_subject"],
	},
	{
		"note": "empty target denied",
		"input": {"actor": "alice", "action": "assign", "role": "User", "user": "", "org": "org-a"},
		"allow": false, "reasons": ["missing_subject"],
	},
	{
		"note": "custom role without an org denied",
		"input": {"actor": "bob", "action": "assign", "role": "r-a-auditor", "user": "ursula"},
		"allow": false, "reasons": ["missing_org"],
	},
	{
		"note": "non-string target denied",
		"input": {"actor": "alice", "action": "assign", "role": "User", "user": 7, "org": "org-a"},
		"allow": false, "reasons": ["missing_subject"],
	},
	{
		"note": "missing target denied",
		"input": {"actor": "alice", "action": "assign", "role": "User", "org": "org-a"},
		"allow": false, "reasons": ["missing_subject"],
	},
	{
		"note": "invalid action denied",
		"input": object.union(req("alice", "User", "newbie", "org-a"), {"action": "grant"}),
		"allow": false, "reasons": ["invalid_action"],
	},
	{
		"note": "invalid action with unknown role reports both",
		"input": object.union(req("alice", "Janitor", "newbie", "org-a"), {"action": "grant"}),
		"allow": false, "reasons": ["invalid_action", "unknown_role"],
	},
	{
		"note": "missing org denied",
		"input": {"actor": "victor", "action": "assign", "role": "User", "user": "newbie"},
		"allow": false, "reasons": ["missing_org"],
	},
	{
		"note": "unknown org denied",
		"input": req("victor", "User", "newbie", "org-z"),
		"allow": false, "reasons": ["unknown_org"],
	},
	{
		"note": "free plan user limited to one org",
		"input": req("alice", "User", "fred", "org-a"),
		"allow": false, "reasons": ["free_plan_single_org"],
	},
	{
		"note": "free plan limit applies to provider admins too",
		"input": req("victor", "User", "fred", "org-a"),
		"allow": false, "reasons": ["free_plan_single_org"],
	},
	{
		"note": "free plan user without an org may join one",
		"input": req("alice", "User", "fay", "org-a"),
		"allow": true, "reasons": [],
	},
	{
		"note": "free plan user may get more roles in their own org",
		"input": req("bob", "Auditor", "gina", "org-a"),
		"allow": true, "reasons": [],
	},
	{
		"note": "free plan limit does not block unassign",
		"input": object.union(req("bob", "User", "fred", "org-a"), {"action": "unassign"}),
		"allow": true, "reasons": [], "assigned": false,
	},
]

# The contract's Edit User row (docs/decisions.md): custom roles for the org's members, or a team's members
# through a custom team role; the only non-escalation rule is that the path covers custom roles only. The
# key-subset check is the deployment-wide setting assign_key_subset, off by default.
key_subset_on := {"settings": {"assign_key_subset": true}}

key_subset_cases := [
	{
		"note": "off: Edit User holder may hand out keys they do not hold",
		"input": req("hank", "Operations", "ursula", "org-a"),
		"allow": true, "reasons": [], "via": "edit_user", "team": "",
	},
	{
		"note": "off: Edit User through a custom team role may hand out keys they do not hold",
		"input": object.union(req("lee", "Auditor", "ursula", "org-a"), {"team": "t-a1"}),
		"allow": true, "reasons": [], "via": "edit_user", "team": "t-a1",
	},
	{
		"note": "off: Edit User holder still assigns only to members of the org",
		"input": req("hank", "Operations", "mallory", "org-a"),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "on: Edit User holder may not hand out keys they do not hold",
		"input": req("hank", "Operations", "ursula", "org-a"),
		"patch": key_subset_on,
		"allow": false, "reasons": ["escalation"], "via": "", "team": "",
	},
	{
		"note": "on: Edit User holder may hand out a role within their keys",
		"input": req("hank", "HR", "ursula", "org-a"),
		"patch": key_subset_on,
		"allow": true, "reasons": [], "via": "edit_user",
	},
	{
		"note": "on: Edit User through a custom team role does not escalate",
		"input": object.union(req("lee", "Auditor", "ursula", "org-a"), {"team": "t-a1"}),
		"patch": key_subset_on,
		"allow": false, "reasons": ["escalation"],
	},
	{
		"note": "on: the team path counts the actor's org keys and team keys",
		"input": object.union(req("lee", "Team Lead", "ursula", "org-a"), {"team": "t-a1"}),
		"patch": key_subset_on,
		"allow": true, "reasons": [], "via": "edit_user", "team": "t-a1",
	},
	{
		"note": "on: no escalation without an Edit User path (not a member)",
		"input": req("hank", "Operations", "mallory", "org-a"),
		"patch": key_subset_on,
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "on: Edit User through a custom team role with no org role counts the team keys",
		"input": object.union(req("nora", "HR", "ursula", "org-a"), {"team": "t-a1"}),
		"patch": object.union(key_subset_on, {"teams": {"t-a1": {"members": {"nora": true}, "roles": {"nora": "7"}}}}),
		"allow": true, "reasons": [], "via": "edit_user", "team": "t-a1",
	},
	{
		"note": "on: the org admin path has no key check",
		"input": req("bob", "Operations", "ursula", "org-a"),
		"patch": key_subset_on,
		"allow": true, "reasons": [], "via": "org_admin",
	},
	{
		"note": "on: an invariant is reported, not escalation",
		"input": req("hank", "Operations", "dan", "org-a"),
		"patch": key_subset_on,
		"allow": false, "reasons": ["target_deleted"],
	},
]

test_key_subset_setting[tc.note] if {
	some tc in key_subset_cases
	check(tc)
}

# A Team Admin giving a custom role without naming a team: any team of the org where the actor is Team Admin
# and the target a member will do; decision.team names it (the first by id).
team_a0 := {
	"teams": {"t-a0": {
		"org": "org-a", "name": "Alpha", "owner": "alice",
		"members": {"ursula": true}, "roles": {"tina": "6"},
	}},
	"orgs": {"org-a": {"role_teams": {"tina": ["t-a0", "t-a1"]}}},
}

any_team_cases := [
	{
		"note": "team admin may assign a custom role without naming their team",
		"input": req("tina", "Auditor", "ursula", "org-a"),
		"allow": true, "reasons": [], "via": "team_admin", "team": "t-a1",
	},
	{
		"note": "without a team, the first qualifying team by id is named",
		"input": req("tina", "Auditor", "ursula", "org-a"),
		"patch": team_a0,
		"allow": true, "reasons": [], "via": "team_admin", "team": "t-a0",
	},
	{
		"note": "without a team, a team the target is not a member of does not count",
		"input": req("tina", "Auditor", "lee", "org-a"),
		"patch": team_a0,
		"allow": true, "reasons": [], "via": "team_admin", "team": "t-a1",
	},
	{
		"note": "without a team, a target in none of the actor's teams is refused",
		"input": req("tina", "Auditor", "will", "org-a"),
		"allow": false, "reasons": ["not_permitted"], "via": "", "team": "",
	},
	{
		"note": "a named team is the only team tried",
		"input": object.union(req("tina", "Auditor", "ursula", "org-a"), {"team": "t-a2"}),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "a named team of another org is not tried",
		"input": object.union(req("tina", "Auditor", "ursula", "org-a"), {"team": "t-b1"}),
		"allow": false, "reasons": ["not_permitted"],
	},
	{
		"note": "a team role still needs its team",
		"input": req("tina", "Team Lead", "ursula", "org-a"),
		"allow": false, "reasons": ["missing_team"],
	},
	{
		"note": "without a team, Edit User through a custom team role uses the team the target is a member of",
		"input": req("lee", "HR", "ursula", "org-a"),
		"allow": true, "reasons": [], "via": "edit_user", "team": "t-a1",
	},
	{
		"note": "Edit User through a custom org role names no team",
		"input": req("hank", "HR", "ursula", "org-a"),
		"allow": true, "reasons": [], "via": "edit_user", "team": "",
	},
]

test_team_admin_without_team[tc.note] if {
	some tc in any_team_cases
	check(tc)
}

test_decision[tc.note] if {
	some tc in cases
	check(tc)
}

check(tc) if {
	d := policy.decision with input as tc.input with data.keygate.db as db(tc)
	d.allow == tc.allow
	d.reasons == tc.reasons
	expect(tc, "via", d.via)
	expect(tc, "team", d.team)
	expect(tc, "assigned", d.assigned)
}

all_cases := array.concat(array.concat(cases, key_subset_cases), any_team_cases)

test_denied_has_no_via_or_team[tc.note] if {
	some tc in all_cases
	d := policy.decision with input as tc.input with data.keygate.db as db(tc)
	denied := d.allow == false
	no_via := d.via == ""
	no_via == denied
	denied_team := {true: {""}, false: {d.team}}
	d.team in denied_team[denied]
}

test_reasons_are_known_codes if {
	every tc in all_cases {
		every code in tc.reasons {
			code in reason.codes
		}
	}
}

assignable_cases := [
	{
		"note": "org owner may assign org roles and custom roles to a member",
		"input": {"actor": "alice", "user": "ursula", "org": "org-a"},
		"roles": ["r-a-auditor", "r-a-hr", "r-a-ops", "r-a-profiles", "r-billing", "r-org-admin", "r-user"],
	},
	{
		"note": "team admin may assign User and custom roles to a member of their team",
		"input": {"actor": "tina", "user": "ursula", "org": "org-a", "team": "t-a1"},
		"roles": ["r-a-auditor", "r-a-hr", "r-a-lead", "r-a-ops", "r-a-profiles", "r-user"],
	},
	{
		"note": "team owner may assign the team roles",
		"input": {"actor": "tom", "user": "ursula", "org": "org-a", "team": "t-a2"},
		"roles": ["r-team-admin", "r-team-manager"],
	},
	{
		"note": "workspace owner may assign the workspace roles",
		"input": {"actor": "will", "user": "ursula", "org": "org-a", "workspace": "w-a2"},
		"roles": ["r-ws-admin", "r-ws-manager"],
	},
	{
		"note": "Edit User holder may assign the org's custom roles",
		"input": {"actor": "hank", "user": "ursula", "org": "org-a"},
		"roles": ["r-a-auditor", "r-a-hr", "r-a-ops", "r-a-profiles"],
	},
	{
		"note": "with assign_key_subset, Edit User holder may assign only custom roles within their keys",
		"input": {"actor": "hank", "user": "ursula", "org": "org-a"},
		"patch": key_subset_on,
		"roles": ["r-a-hr"],
	},
	{
		"note": "team admin may assign custom roles to a member of their team without naming it",
		"input": {"actor": "tina", "user": "ursula", "org": "org-a"},
		"roles": ["r-a-auditor", "r-a-hr", "r-a-ops", "r-a-profiles", "r-user"],
	},
	{
		"note": "provider admin may assign every role of the org and Provider Admin",
		"input": {"actor": "victor", "user": "ursula", "org": "org-a"},
		"roles": ["r-a-auditor", "r-a-hr", "r-a-ops", "r-a-profiles", "r-billing", "r-org-admin", "r-provider-admin", "r-user"],
	},
	{
		"note": "deleted actor may assign nothing",
		"input": {"actor": "dan", "user": "ursula", "org": "org-a"},
		"roles": [],
	},
	{
		"note": "plain user may assign nothing",
		"input": {"actor": "ursula", "user": "tina", "org": "org-a"},
		"roles": [],
	},
]

test_assignable[tc.note] if {
	some tc in assignable_cases
	roles := policy.assignable with input as tc.input with data.keygate.db as db(tc)
	roles == tc.roles
}

# assignable and decision answer from the same rules.
test_assignable_agrees_with_decision[tc.note] if {
	some tc in assignable_cases
	roles := policy.assignable with input as tc.input with data.keygate.db as db(tc)
	every role, _ in fixture.db.roles {
		d := policy.decision with input as object.union(tc.input, {"action": "assign", "role": role})
			with data.keygate.db as db(tc)
		listed := role in roles
		d.allow == listed
	}
}
