// Package model is keygate's domain: the Layer5 Cloud access model (keys, keychains, roles, assignments per
// organization) and the resources they protect. It is pure Go: no I/O, no OPA. Sources (seed files, PostgreSQL)
// produce a Snapshot; Resolve validates it against the built-in catalogue and turns every reference into an id.
package model

// Role scopes.
const (
	ScopeProvider     = "provider"
	ScopeOrganization = "organization"
	ScopeTeam         = "team"
	ScopeWorkspace    = "workspace"
)

// User plans.
const (
	PlanFree       = "free"
	PlanTeam       = "team"
	PlanEnterprise = "enterprise"
)

// Design visibilities.
const (
	VisibilityPrivate   = "private"
	VisibilityPublic    = "public"
	VisibilityPublished = "published"
)

// Resource types a decision or a route may name.
const (
	ResourceOrganization = "organization"
	ResourceTeam         = "team"
	ResourceWorkspace    = "workspace"
	ResourceDesign       = "design"
	ResourceUser         = "user"
)

// Names of the default roles, exactly as the seeds spell them.
const (
	RoleProviderAdmin       = "Provider Admin"
	RoleOrganizationAdmin   = "Organization Admin"
	RoleBillingManager      = "Organization Billing Manager"
	RoleUser                = "User"
	RoleWorkspaceAdmin      = "Workspace Admin"
	RoleWorkspaceManager    = "Workspace Manager"
	RoleTeamAdmin           = "Team Admin"
	RoleTeamManager         = "Team Manager"
	KeyEditUser             = "Edit User"
	KeyUpdateProfile        = "Update Profile"
	KeyDeleteOrganization   = "Delete Organization"
	KeyCreateOrganization   = "Create Organization"
	OrgFromHeader           = "header"
	defaultPlan             = PlanTeam
	defaultDesignVisibility = VisibilityPrivate
)

// Snapshot is the whole access model at one moment, as a seed file or the database holds it. References
// (a keychain's keys, a role's keychains, an assignment's role, ...) may be ids or exact names until Resolve.
type Snapshot struct {
	Keys          []Key          `json:"keys,omitempty"`
	Keychains     []Keychain     `json:"keychains,omitempty"`
	Roles         []Role         `json:"roles,omitempty"`
	Users         []User         `json:"users,omitempty"`
	Organizations []Organization `json:"organizations,omitempty"`
	Teams         []Team         `json:"teams,omitempty"`
	Workspaces    []Workspace    `json:"workspaces,omitempty"`
	Designs       []Design       `json:"designs,omitempty"`
	Assignments   []Assignment   `json:"assignments,omitempty"`
	Tokens        []Token        `json:"tokens,omitempty"`
	Routes        []Route        `json:"routes,omitempty"`
	Settings      Settings       `json:"settings,omitzero"`
	// Position is the source's commit position the snapshot was read at (store.Snapshot); 0 when the source has
	// none (a seed file). Not part of a seed file.
	Position uint64 `json:"-" yaml:"-"`
}

// Settings are deployment-wide choices the policies read (data.keygate.db.settings, docs/decisions.md).
type Settings struct {
	// AssignKeySubset adds a key-subset check to the assignment table's Edit User path: a custom role is
	// handed out through Edit User only if the actor holds every key of it (else "escalation"). Off by default.
	AssignKeySubset bool `json:"assign_key_subset,omitempty"`
}

// Key is one permission.
type Key struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Category string `json:"category,omitempty"`
	// Function is create, read, update, delete or the name of a special action.
	Function string `json:"function,omitempty"`
	// Aliases are other names that resolve to this key (the seeds' spelling where the catalogue differs).
	Aliases []string `json:"aliases,omitempty"`
	// System keys ship with the product and are immutable.
	System bool `json:"system,omitempty"`
}

// Keychain groups keys. Org is empty for a system keychain.
type Keychain struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	Org    string   `json:"org,omitempty"`
	Keys   []string `json:"keys,omitempty"`
	System bool     `json:"system,omitempty"`
}

// Role groups keychains. Org is empty for a default (system) role. OwnerOnly lists keys the role grants only
// on resources the holder owns.
type Role struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	Scope     string   `json:"scope"`
	Org       string   `json:"org,omitempty"`
	Keychains []string `json:"keychains,omitempty"`
	OwnerOnly []string `json:"owner_only,omitempty"`
	System    bool     `json:"system,omitempty"`
}

// User is an account. Deleted users are kept (soft delete) and denied everything.
type User struct {
	ID      string `json:"id"`
	Email   string `json:"email,omitempty"`
	Plan    string `json:"plan,omitempty"`
	Deleted bool   `json:"deleted,omitempty"`
}

// Organization is the tenant boundary. Owner is its creator.
type Organization struct {
	ID    string `json:"id"`
	Name  string `json:"name,omitempty"`
	Owner string `json:"owner"`
}

// Team is a group of users of one organization.
type Team struct {
	ID      string   `json:"id"`
	Org     string   `json:"org"`
	Name    string   `json:"name,omitempty"`
	Owner   string   `json:"owner"`
	Members []string `json:"members,omitempty"`
}

// Workspace is a collaboration space of one organization; its teams and members may come from other orgs.
type Workspace struct {
	ID      string   `json:"id"`
	Org     string   `json:"org"`
	Name    string   `json:"name,omitempty"`
	Owner   string   `json:"owner"`
	Teams   []string `json:"teams,omitempty"`
	Members []string `json:"members,omitempty"`
}

// Design lives in a workspace.
type Design struct {
	ID         string `json:"id"`
	Workspace  string `json:"workspace"`
	Owner      string `json:"owner"`
	Visibility string `json:"visibility,omitempty"`
}

// Assignment gives a user a role in an organization (and a team or workspace for roles of that scope).
type Assignment struct {
	User      string `json:"user"`
	Role      string `json:"role"`
	Org       string `json:"org,omitempty"`
	Team      string `json:"team,omitempty"`
	Workspace string `json:"workspace,omitempty"`
}

// Token acts for its user until revoked or expired. ExpiresAt is RFC 3339; empty means it does not expire.
type Token struct {
	ID        string `json:"id"`
	User      string `json:"user"`
	Revoked   bool   `json:"revoked,omitempty"`
	ExpiresAt string `json:"expires_at,omitempty"`
}

// Route maps an Envoy request (service, method, path pattern) to the key it needs. Path patterns are
// slash-separated literal segments and {param} placeholders. OrgFrom is "header" (X-Current-Orgid or
// Layer5-Current-Orgid) or the name of a path parameter. Resource, optional, is "type:param" (for example
// "team:team"): the resource the path names.
type Route struct {
	Service  string `json:"service"`
	Method   string `json:"method"`
	Path     string `json:"path"`
	Key      string `json:"key"`
	OrgFrom  string `json:"org_from,omitempty"`
	Resource string `json:"resource,omitempty"`
}

// Merge returns a snapshot holding base's entries followed by add's.
func Merge(base, add Snapshot) Snapshot {
	return Snapshot{
		Keys:          append(append([]Key(nil), base.Keys...), add.Keys...),
		Keychains:     append(append([]Keychain(nil), base.Keychains...), add.Keychains...),
		Roles:         append(append([]Role(nil), base.Roles...), add.Roles...),
		Users:         append(append([]User(nil), base.Users...), add.Users...),
		Organizations: append(append([]Organization(nil), base.Organizations...), add.Organizations...),
		Teams:         append(append([]Team(nil), base.Teams...), add.Teams...),
		Workspaces:    append(append([]Workspace(nil), base.Workspaces...), add.Workspaces...),
		Designs:       append(append([]Design(nil), base.Designs...), add.Designs...),
		Assignments:   append(append([]Assignment(nil), base.Assignments...), add.Assignments...),
		Tokens:        append(append([]Token(nil), base.Tokens...), add.Tokens...),
		Routes:        append(append([]Route(nil), base.Routes...), add.Routes...),
		Settings:      Settings{AssignKeySubset: base.Settings.AssignKeySubset || add.Settings.AssignKeySubset},
	}
}
