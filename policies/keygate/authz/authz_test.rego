package keygate.authz_test

import data.keygate.authz
import data.keygate.fixture
import data.keygate.reason

# 2033-05-18: after tok-ursula-expired, before tok-ursula-future.
now := 2000000000000000000

db(tc) := object.union(fixture.db, object.get(tc, "patch", {}))

# The Team Admin role's grant path for Edit Team, made owner-only by the cases that patch it so.
_team_admin_edit_team := {
	"via": "role", "scope": "team", "owner_only": true,
	"role": {"id": "r-team-admin", "name": "Team Admin"},
	"keychain": {"id": "kc-team-admin", "name": "Team Administration"},
	"key": {"id": "k-edit-team", "name": "Edit Team"},
}

# Optional expectations: a case checks a field only when it names it.
expect(tc, field, _) if not field in object.keys(tc)

expect(tc, field, actual) if tc[field] == actual

cases := [
	# 1. Subject
	{
		"note": "missing subject denied",
		"input": {"org": "org-a", "key": "View All Teams"},
		"allow": false, "reasons": ["missing_subject"],
	},
	{
		"note": "token acts for its user",
		"input": {"token": "tok-ursula", "org": "org-a", "key": "View All Teams"},
		"allow": true, "reasons": [], "user": "ursula",
	},
	{
		"note": "unknown token denied",
		"input": {"token": "tok-nope", "org": "org-a", "key": "View All Teams"},
		"allow": false, "reasons": ["unknown_token"],
	},
	{
		"note": "revoked token denied",
		"input": {"token": "tok-ursula-revoked", "org": "org-a", "key": "View All Teams"},
		"allow": false, "reasons": ["token_revoked"],
	},
	{
		"note": "expired token denied",
		"input": {"token": "tok-ursula-expired", "org": "org-a", "key": "View All Teams"},
		"allow": false, "reasons": ["token_expired"],
	},
	{
		"note": "org role key applies on a team of the org",
		"input": {"user": "bob", "org": "org-a", "key": "Edit Team", "resource": {"type": "team", "id": "t-a1"}},
		"allow": true, "reasons": [],
	},
	{
		"note": "org role key applies on a workspace of the org",
		"input": {"user": "bob", "org": "org-a", "key": "View Workspace", "resource": {"type": "workspace", "id": "w-a1"}},
		"allow": true, "reasons": [],
	},
	{
		"note": "org role key applies on a design of the org",
		"input": {"user": "bob", "org": "org-a", "key": "View Design", "resource": {"type": "design", "id": "d-a1-private"}},
		"allow": true, "reasons": [],
	},
	{
		"note": "org role key applies to a user",
		"input": {"user": "bob", "org": "org-a", "key": "Edit User", "resource": {"type": "user", "id": "tina"}},
		"allow": true, "reasons": [],
	},
	{
		"note": "token expiring later allowed on a resource of the org",
		"input": {"token": "tok-ursula-future", "org": "org-a", "key": "View All Teams", "resource": {"type": "organization", "id": "org-a"}},
		"allow": true, "reasons": [],
	},
	{
		"note": "token expiring later allowed",
		"input": {"token": "tok-ursula-future", "org": "org-a", "key": "View All Teams"},
		"allow": true, "reasons": [],
	},
	{
		"note": "token of deleted user denied",
		"input": {"token": "tok-dan", "org": "org-a", "key": "View All Teams"},
		"allow": false, "reasons": ["user_deleted"],
	},
	{
		"note": "token and user that disagree denied",
		"input": {"token": "tok-ursula", "user": "bob", "org": "org-a", "key": "View All Teams"},
		"allow": false, "reasons": ["unknown_token"],
	},
	{
		"note": "token and its own user allowed",
		"input": {"token": "tok-ursula", "user": "ursula", "org": "org-a", "key": "View All Teams"},
		"allow": true, "reasons": [],
	},
	{
		"note": "deleted user denied everything",
		"input": {"user": "dan", "org": "org-a", "key": "Update Organization"},
		"allow": false, "reasons": ["user_deleted"],
	},
	{
		"note": "deleted provider admin denied everything",
		"input": {"user": "dan", "org": "org-b", "key": "View Billing"},
		"patch": {"provider_admins": {"dan": true}},
		"allow": false, "reasons": ["user_deleted"],
	},
	{
		"note": "deleted user cannot read a public design",
		"input": {"user": "dan", "org": "org-a", "key": "View Design", "resource": {"type": "design", "id": "d-a1-public"}},
		"allow": false, "reasons": ["user_deleted"],
	},
	{
		"note": "re-registered user with the same email regains nothing",
		"input": {"user": "dan-2", "org": "org-a", "key": "Update Organization"},
		"allow": false, "reasons": ["no_grant"],
	},
	# 2. Org and key
	{
		"note": "missing org denied",
		"input": {"user": "bob", "key": "View All Teams"},
		"allow": false, "reasons": ["missing_org"],
	},
	{
		"note": "unknown org denied",
		"input": {"user": "bob", "org": "org-z", "key": "View All Teams"},
		"allow": false, "reasons": ["unknown_org"],
	},
	{
		"note": "missing key denied",
		"input": {"user": "bob", "org": "org-a"},
		"allow": false, "reasons": ["missing_key"],
	},
	{
		"note": "unknown key denied",
		"input": {"user": "bob", "org": "org-a", "key": "Fly To The Moon"},
		"allow": false, "reasons": ["unknown_key"],
	},
	{
		"note": "every input error is reported in rule order",
		"input": {"token": "tok-ursula-revoked", "resource": {"type": "planet"}},
		"allow": false, "reasons": ["token_revoked", "missing_org", "missing_key", "invalid_resource"],
	},
	{
		"note": "key resolves by id",
		"input": {"user": "bob", "org": "org-a", "key": "k-update-org"},
		"allow": true, "reasons": [], "key": "k-update-org",
	},
	{
		"note": "Update Profile alias resolves",
		"input": {"user": "pat", "org": "org-b", "key": "Update Profile"},
		"allow": true, "reasons": [], "key": "k-update-profile",
	},
	# 3. Resource
	{
		"note": "unknown resource not found",
		"input": {"user": "bob", "org": "org-a", "key": "View Design", "resource": {"type": "design", "id": "d-nope"}},
		"allow": false, "reasons": ["resource_not_found"],
	},
	{
		"note": "unknown organization resource not found",
		"input": {"user": "bob", "org": "org-a", "key": "Update Organization", "resource": {"type": "organization", "id": "org-z"}},
		"allow": false, "reasons": ["resource_not_found"],
	},
	{
		"note": "resource of another org is asked in its org",
		"input": {"user": "bob", "org": "org-a", "key": "View Design", "resource": {"type": "design", "id": "d-b1-private"}},
		"allow": false, "reasons": ["resource_not_in_org"],
	},
	{
		"note": "organization resource must be the org",
		"input": {"user": "bob", "org": "org-a", "key": "Update Organization", "resource": {"type": "organization", "id": "org-b"}},
		"allow": false, "reasons": ["resource_not_in_org"],
	},
	{
		"note": "unknown resource type invalid",
		"input": {"user": "bob", "org": "org-a", "key": "View Design", "resource": {"type": "planet", "id": "p-1"}},
		"allow": false, "reasons": ["invalid_resource"],
	},
	{
		"note": "resource without id invalid",
		"input": {"user": "bob", "org": "org-a", "key": "View Design", "resource": {"type": "design"}},
		"allow": false, "reasons": ["invalid_resource"],
	},
	{
		"note": "null resource means no resource",
		"input": {"user": "bob", "org": "org-a", "key": "View Design", "resource": null},
		"allow": true, "reasons": [],
	},
	# 4. Provider Admin
	{
		"note": "provider admin holds every key in every org",
		"input": {"user": "victor", "org": "org-b", "key": "Edit Billing"},
		"allow": true, "reasons": [], "vias": {"role"},
		"grants": [{
			"via": "role", "scope": "provider", "role": {"id": "r-provider-admin", "name": "Provider Admin"},
			"keychain": {"id": "kc-provider", "name": "Provider Administration"},
			"key": {"id": "k-edit-billing", "name": "Edit Billing"}, "owner_only": false,
		}],
	},
	{
		"note": "provider admin holds owner-only keys on anyone's resource",
		"input": {"user": "victor", "org": "org-a", "key": "Delete Design", "resource": {"type": "design", "id": "d-a1-private"}},
		"allow": true, "reasons": [],
	},
	{
		"note": "provider admin holds a key none of its keychains holds",
		"input": {"user": "victor", "org": "org-a", "key": "Extra"},
		# The compiler lists every key under provider_grants; one outside the role's keychains has an empty keychain.
		"patch": {
			"keys": {"k-extra": {"name": "Extra", "category": "X", "function": "update"}}, "key_ids": {"Extra": "k-extra"},
			"provider_grants": {"k-extra": [{
				"via": "role", "scope": "provider", "role": {"id": "r-provider-admin", "name": "Provider Admin"},
				"keychain": {"id": "", "name": ""}, "key": {"id": "k-extra", "name": "Extra"}, "owner_only": false,
			}]},
		},
		"allow": true, "reasons": [],
		"grants": [{
			"via": "role", "scope": "provider", "role": {"id": "r-provider-admin", "name": "Provider Admin"},
			"keychain": {"id": "", "name": ""},
			"key": {"id": "k-extra", "name": "Extra"}, "owner_only": false,
		}],
	},
	# 5. Org roles
	{
		"note": "org admin may update their org",
		"input": {"user": "bob", "org": "org-a", "key": "Update Organization", "resource": {"type": "organization", "id": "org-a"}},
		"allow": true, "reasons": [],
		"grants": [{
			"via": "role", "scope": "organization", "role": {"id": "r-org-admin", "name": "Organization Admin"},
			"keychain": {"id": "kc-org-admin", "name": "Organization Management"},
			"key": {"id": "k-update-org", "name": "Update Organization"}, "owner_only": false,
		}],
	},
	{
		"note": "role in org A grants nothing in org B",
		"input": {"user": "bob", "org": "org-b", "key": "Update Organization"},
		"allow": false, "reasons": ["no_grant"],
	},
	{
		"note": "billing manager may view billing",
		"input": {"user": "carol", "org": "org-a", "key": "View Billing"},
		"allow": true, "reasons": [],
	},
	{
		"note": "user may not view billing",
		"input": {"user": "ursula", "org": "org-a", "key": "View Billing"},
		"allow": false, "reasons": ["no_grant"],
	},
	{
		"note": "custom org role grants its keys in its org",
		"input": {"user": "amy", "org": "org-a", "key": "View Billing"},
		"allow": true, "reasons": [],
	},
	{
		"note": "a key held through two keychains of two roles lists every path",
		"input": {"user": "hank", "org": "org-a", "key": "View All Teams"},
		"allow": true, "reasons": [],
		"grants": [
			{
				"via": "role", "scope": "organization", "role": {"id": "r-a-hr", "name": "HR"},
				"keychain": {"id": "kc-a-hr", "name": "Acme HR"},
				"key": {"id": "k-view-teams", "name": "View All Teams"}, "owner_only": false,
			},
			{
				"via": "role", "scope": "organization", "role": {"id": "r-user", "name": "User"},
				"keychain": {"id": "kc-user", "name": "User Basics"},
				"key": {"id": "k-view-teams", "name": "View All Teams"}, "owner_only": false,
			},
		],
	},
	{
		"note": "non-member holds nothing in the org",
		"input": {"user": "mallory", "org": "org-a", "key": "View All Teams"},
		"allow": false, "reasons": ["no_grant"],
	},
	# Free plan: a single organization (users document)
	{
		"note": "free-plan user who belongs to an org may not create another",
		"input": {"user": "gina", "org": "org-a", "key": "Create Organization"},
		"allow": false, "reasons": ["free_plan_single_org"], "grants": [],
	},
	{
		"note": "free-plan user's create organization is refused by id too",
		"input": {"user": "gina", "org": "org-a", "key": "k-create-org"},
		"allow": false, "reasons": ["free_plan_single_org"],
	},
	{
		"note": "team-plan user holding the key may create an organization",
		"input": {"user": "tina", "org": "org-a", "key": "Create Organization"},
		"allow": true, "reasons": [], "vias": {"role"},
	},
	{
		"note": "free-plan user keeps the other keys of the org",
		"input": {"user": "gina", "org": "org-a", "key": "View All Teams"},
		"allow": true, "reasons": [],
	},
	{
		"note": "free-plan provider admin is not held to one org",
		"input": {"user": "victor", "org": "org-a", "key": "Create Organization"},
		"patch": {"free": {"victor": "org-b"}},
		"allow": true, "reasons": [],
	},
	# 8. Delete Organization
	{
		"note": "org owner may delete their org without a role holding the key",
		"input": {"user": "alice", "org": "org-a", "key": "Delete Organization", "resource": {"type": "organization", "id": "org-a"}},
		"allow": true, "reasons": [], "vias": {"owner"},
	},
	{
		"note": "org admin cannot delete org they do not own",
		"input": {"user": "bob", "org": "org-a", "key": "Delete Organization", "resource": {"type": "organization", "id": "org-a"}},
		"allow": false, "reasons": ["owner_required"],
	},
	{
		"note": "custom role holding Delete Organization does not let a non-owner delete",
		"input": {"user": "amy", "org": "org-a", "key": "Delete Organization"},
		"patch": {"orgs": {"org-a": {"members": {"amy": "9"}}}, "rolesets": {"9": {"roles": {"r-a-ops": true}, "keys": {"k-update-org": 0, "k-delete-org": 0}}}},
		"allow": false, "reasons": ["owner_required"],
	},
	{
		"note": "provider admin may delete any org",
		"input": {"user": "victor", "org": "org-b", "key": "Delete Organization", "resource": {"type": "organization", "id": "org-b"}},
		"allow": true, "reasons": [], "vias": {"role"},
	},
	# 6. Team and workspace roles
	{
		"note": "team admin may edit their team",
		"input": {"user": "tina", "org": "org-a", "key": "Edit Team", "resource": {"type": "team", "id": "t-a1"}},
		"allow": true, "reasons": [],
		"grants": [{
			"via": "role", "scope": "team", "team": "t-a1", "role": {"id": "r-team-admin", "name": "Team Admin"},
			"keychain": {"id": "kc-team-admin", "name": "Team Administration"},
			"key": {"id": "k-edit-team", "name": "Edit Team"}, "owner_only": false,
		}],
	},
	{
		"note": "team role grants nothing without a resource",
		"input": {"user": "tina", "org": "org-a", "key": "Edit Team"},
		"allow": false, "reasons": ["no_grant"],
	},
	{
		"note": "team role grants nothing on another team",
		"input": {"user": "tina", "org": "org-a", "key": "Edit Team", "resource": {"type": "team", "id": "t-a2"}},
		"allow": false, "reasons": ["no_grant"],
	},
	{
		"note": "workspace admin may edit their workspace",
		"input": {"user": "wendy", "org": "org-a", "key": "Edit Workspace", "resource": {"type": "workspace", "id": "w-a1"}},
		"allow": true, "reasons": [], "vias": {"role"},
	},
	{
		"note": "workspace admin may delete designs in their workspace",
		"input": {"user": "wendy", "org": "org-a", "key": "Delete Design", "resource": {"type": "design", "id": "d-a1-private"}},
		"allow": true, "reasons": [],
	},
	{
		"note": "workspace role grants nothing on another workspace",
		"input": {"user": "wendy", "org": "org-a", "key": "Edit Workspace", "resource": {"type": "workspace", "id": "w-a2"}},
		"allow": false, "reasons": ["no_grant"],
	},
	{
		"note": "workspace role grants nothing without a resource",
		"input": {"user": "wendy", "org": "org-a", "key": "Edit Workspace"},
		"allow": false, "reasons": ["no_grant"],
	},
	# 7. Owner-only
	{
		"note": "owner-only key only on own resource",
		"input": {"user": "ursula", "org": "org-a", "key": "Edit Design", "resource": {"type": "design", "id": "d-a1-private"}},
		"allow": true, "reasons": [], "vias": {"role", "collaborator"},
	},
	{
		"note": "owner-only key denied on a resource of someone else",
		"input": {"user": "ursula", "org": "org-a", "key": "Edit Design", "resource": {"type": "design", "id": "d-a1-public"}},
		"allow": false, "reasons": ["owner_only"],
	},
	{
		"note": "owner-only key denied without a resource",
		"input": {"user": "ursula", "org": "org-a", "key": "Edit Design"},
		"allow": false, "reasons": ["owner_only"],
	},
	{
		"note": "owner-only key on the user itself",
		"input": {"user": "ursula", "org": "org-a", "key": "View User Settings", "resource": {"type": "user", "id": "ursula"}},
		"allow": true, "reasons": [],
	},
	{
		"note": "owner-only key denied on another user",
		"input": {"user": "ursula", "org": "org-a", "key": "View User Settings", "resource": {"type": "user", "id": "tina"}},
		"allow": false, "reasons": ["owner_only"],
	},
	{
		"note": "owner-only team role key applies to the team owner",
		"input": {"user": "tom", "org": "org-a", "key": "Edit Team", "resource": {"type": "team", "id": "t-a2"}},
		"patch": {
			"teams": {"t-a2": {"roles": {"tom": "9"}}},
			"rolesets": {"9": {"roles": {"r-team-admin": true}, "keys": {"k-edit-team": 1}, "grants": {"k-edit-team": [_team_admin_edit_team]}}},
			"roles": {"r-team-admin": {"keys": {"k-edit-team": 1}}},
		},
		"allow": true, "reasons": [],
	},
	{
		"note": "owner-only team role key denied to others",
		"input": {"user": "tina", "org": "org-a", "key": "Edit Team", "resource": {"type": "team", "id": "t-a1"}},
		"patch": {
			"rolesets": {"6": {"keys": {"k-edit-team": 1}, "grants": {"k-edit-team": [_team_admin_edit_team]}}},
			"roles": {"r-team-admin": {"keys": {"k-edit-team": 1}}},
		},
		"allow": false, "reasons": ["owner_only"],
	},
	{
		"note": "owner-only workspace role key denied to others",
		"input": {"user": "wendy", "org": "org-a", "key": "Edit Workspace", "resource": {"type": "workspace", "id": "w-a1"}},
		"patch": {
			"rolesets": {"8": {"keys": {"k-edit-workspace": 1}, "grants": {"k-edit-workspace": [{
				"via": "role", "scope": "workspace", "owner_only": true,
				"role": {"id": "r-ws-admin", "name": "Workspace Admin"},
				"keychain": {"id": "kc-workspace-admin", "name": "Workspace Administration"},
				"key": {"id": "k-edit-workspace", "name": "Edit Workspace"},
			}]}}},
			"roles": {"r-ws-admin": {"keys": {"k-edit-workspace": 1}}},
		},
		"allow": false, "reasons": ["owner_only"],
	},
	{
		"note": "org admin holds the User role's owner-only keys unrestricted",
		"input": {"user": "bob", "org": "org-a", "key": "Edit Design", "resource": {"type": "design", "id": "d-a1-private"}},
		"allow": true, "reasons": [],
	},
	# 9. Collaborators
	{
		"note": "cross-org workspace member may view design",
		"input": {"user": "xavier", "org": "org-a", "key": "View Design", "resource": {"type": "design", "id": "d-a1-private"}},
		"allow": true, "reasons": [], "vias": {"collaborator"},
	},
	{
		"note": "cross-org member of a workspace team may view design",
		"input": {"user": "yara", "org": "org-a", "key": "View Design", "resource": {"type": "design", "id": "d-a1-private"}},
		"allow": true, "reasons": [], "vias": {"collaborator"},
	},
	{
		"note": "cross-org workspace member may view the workspace",
		"input": {"user": "xavier", "org": "org-a", "key": "View Workspace", "resource": {"type": "workspace", "id": "w-a1"}},
		"allow": true, "reasons": [],
	},
	{
		"note": "cross-org access is asked in the resource's org",
		"input": {"user": "xavier", "org": "org-b", "key": "View Design", "resource": {"type": "design", "id": "d-a1-private"}},
		"allow": false, "reasons": ["resource_not_in_org"],
	},
	{
		"note": "collaborator may not edit a design of someone else",
		"input": {"user": "xavier", "org": "org-a", "key": "Edit Design", "resource": {"type": "design", "id": "d-a1-private"}},
		"allow": false, "reasons": ["owner_only"],
	},
	{
		"note": "collaborator holds nothing outside the workspace",
		"input": {"user": "xavier", "org": "org-a", "key": "View Design", "resource": {"type": "design", "id": "d-a2-private"}},
		"allow": false, "reasons": ["no_grant"],
	},
	{
		"note": "collaborator holds only the User role's keys",
		"input": {"user": "xavier", "org": "org-a", "key": "Edit Workspace", "resource": {"type": "workspace", "id": "w-a1"}},
		"allow": false, "reasons": ["no_grant"],
	},
	# 10. Public designs
	{
		"note": "anyone may read a public design",
		"input": {"user": "mallory", "org": "org-a", "key": "View Design", "resource": {"type": "design", "id": "d-a1-public"}},
		"allow": true, "reasons": [], "vias": {"public_design"},
	},
	{
		"note": "anyone may read a published design",
		"input": {"user": "mallory", "org": "org-a", "key": "View Design", "resource": {"type": "design", "id": "d-a2-published"}},
		"allow": true, "reasons": [],
	},
	{
		"note": "public design is read-only for outsiders",
		"input": {"user": "mallory", "org": "org-a", "key": "Edit Design", "resource": {"type": "design", "id": "d-a1-public"}},
		"allow": false, "reasons": ["no_grant"],
	},
	{
		"note": "private design not readable by outsiders",
		"input": {"user": "mallory", "org": "org-a", "key": "View Design", "resource": {"type": "design", "id": "d-a2-private"}},
		"allow": false, "reasons": ["no_grant"],
	},
]

test_decision[tc.note] if {
	some tc in cases
	d := authz.decision with input as tc.input with data.keygate.db as db(tc) with time.now_ns as now
	d.allow == tc.allow
	d.reasons == tc.reasons
	expect(tc, "grants", d.grants)
	expect(tc, "vias", {g.via | some g in d.grants})
	expect(tc, "user", d.user)
	expect(tc, "key", d.key)
}

# allow agrees with the case; a decision is allowed exactly when it lists a grant; the lean
# validity check of allow agrees with the error sets behind reasons.
test_allow_matches_decision[tc.note] if {
	some tc in cases
	allowed := authz.allow with input as tc.input with data.keygate.db as db(tc) with time.now_ns as now
	allowed == tc.allow
	listed := authz.grants with input as tc.input with data.keygate.db as db(tc) with time.now_ns as now
	granted := count(listed) > 0
	allowed == granted
	errors := authz._errors with input as tc.input with data.keygate.db as db(tc) with time.now_ns as now
	valid := authz._valid with input as tc.input with data.keygate.db as db(tc) with time.now_ns as now
	no_errors := count(errors) == 0
	valid == no_errors
}

test_reasons_are_known_codes if {
	every tc in cases {
		every code in tc.reasons {
			code in reason.codes
		}
	}
}

key_cases := [
	{
		"note": "keys of a free-plan user in an org leave out Create Organization",
		"input": {"user": "gina", "org": "org-a"},
		"keys": [
			"k-connect-github", "k-delete-design", "k-edit-design",
			"k-view-design", "k-view-settings", "k-view-teams", "k-view-workspace",
		],
		"owner_only": {"k-delete-design", "k-edit-design", "k-view-settings"},
	},
	{
		"note": "keys lists the org role keys with owner-only marked",
		"input": {"user": "ursula", "org": "org-a"},
		"keys": [
			"k-connect-github", "k-create-org", "k-delete-design", "k-edit-design",
			"k-view-design", "k-view-settings", "k-view-teams", "k-view-workspace",
		],
		"owner_only": {"k-delete-design", "k-edit-design", "k-view-settings"},
	},
	{
		"note": "keys of a token are its user's",
		"input": {"token": "tok-ursula", "org": "org-b"},
		"keys": [], "owner_only": set(),
	},
	{
		"note": "org owner holds Delete Organization",
		"input": {"user": "alice", "org": "org-a"},
		"includes": ["k-delete-org"], "owner_only": set(),
	},
	{
		"note": "org admin who is not the owner does not hold Delete Organization",
		"input": {"user": "bob", "org": "org-a"},
		"excludes": "k-delete-org", "includes": ["k-update-org"], "owner_only": set(),
	},
	{
		"note": "provider admin holds every key",
		"input": {"user": "victor", "org": "org-b"},
		"keys": sort(object.keys(fixture.keys)), "owner_only": set(),
	},
	{
		"note": "deleted user holds no keys",
		"input": {"user": "dan", "org": "org-a"},
		"keys": [], "owner_only": set(),
	},
	{
		"note": "no keys in an unknown org",
		"input": {"user": "victor", "org": "org-z"},
		"keys": [], "owner_only": set(),
	},
	{
		"note": "non-member holds no keys",
		"input": {"user": "mallory", "org": "org-a"},
		"keys": [], "owner_only": set(),
	},
]

test_keys[tc.note] if {
	some tc in key_cases
	keys := authz.keys with input as tc.input with data.keygate.db as fixture.db with time.now_ns as now
	grants := authz.key_grants with input as tc.input with data.keygate.db as fixture.db with time.now_ns as now
	expect(tc, "keys", keys)
	every k in object.get(tc, "includes", []) {
		k in keys
	}
	not object.get(tc, "excludes", "none") in keys
	{k | some k, g in grants; g.owner_only} == tc.owner_only
	sort(object.keys(grants)) == keys
}

# Without a Delete Organization key in the catalogue, nothing is special-cased and keys still work. (The
# compiler derives the role sets' deny maps from the catalogue; this one has none.)
test_keys_without_delete_organization if {
	key_ids := object.remove(fixture.db.key_ids, ["Delete Organization"])
	rolesets := {n: object.remove(rs, ["deny"]) | some n, rs in fixture.db.rolesets}
	keys := authz.keys with input as {"user": "bob", "org": "org-a"}
		with data.keygate.db as fixture.db
		with data.keygate.db.key_ids as key_ids
	"k-delete-org" in keys
	authz.allow with input as {"user": "bob", "org": "org-a", "key": "k-delete-org"}
		with data.keygate.db as fixture.db
		with data.keygate.db.key_ids as key_ids
		with data.keygate.db.rolesets as rolesets
}
