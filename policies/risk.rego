# Tollgate default risk policy (DESIGN section 3).
#
# Input: one document per change (see src/risk/input.rs for the exact shape).
# Output: data.tollgate.risk.decision =
#   {"tier", "reasons", "requirements", "rollback_effective", "violations"}
#
# The same policy runs under regorus (in Tollgate) and OPA (the parity peer in
# tests/policy.rs), and both must give identical decisions. So it keeps to
# plain builtins, renders only strings, booleans and integers into reasons,
# never emits a set (sets are sorted into arrays first), and builds reasons in
# a fixed order: change-level reasons, then settings in input order, then
# targets, then effective settings, then blast radius.
#
# Rules, in short:
# - Tier of a setting = its catalogue default tier, +1 when it loosens. Loosening
#   is direction "loosen", removing the setting, removing the whole baseline, or
#   an unknown direction (fail closed). Capped at 3.
# - Wipe/retire side effects and the certs, container and enforcement categories
#   are T3 in both directions. Cosmetic settings are T0 in every direction.
# - A setting missing from the catalogue is T3 and not rollback-effective: we
#   know nothing about what it does (fail closed).
# - What devices get counts like what the change says: an effective setting
#   of a target group that the change loosens (another baseline now wins the
#   key for them, or the one that did no longer applies, or the key falls
#   into a conflict) is judged as a loosening of that setting, with a reason
#   that names both baselines. Effective tightenings add nothing beyond the
#   change's own settings. Effective changes count for rollback_effective.
# - Target changes are at least a tier-1 change, +1 because both directions
#   weaken someone: removed groups lose this baseline's controls; added groups
#   get every setting of the baseline, which may override (by priority) a
#   stricter baseline they had, and widens who is hit if the baseline is wrong.
# - A blast radius over 10% of the fleet is +1 on a change that is already at
#   least T1 (a cosmetic change stays T0 however many devices it reaches).
# - Governance changes (tollgate.yaml, the policy itself) are always T3.
# - Granting or changing an exception is at least T2, plus the loosening rules
#   for every exempted setting; removing one is T1 (devices return under
#   control). An exception without reason or expiry, expiring more than 90 days
#   ahead, or already expired is a violation: it cannot be promoted at all.
# - A baseline whose owners, priority or platform change is at least T2: owners
#   decide who approves its future changes, priority decides which baseline wins
#   where targets overlap, and the platform decides which devices it reaches.
# - Unknown change kinds are T3 (fail closed).
package tollgate.risk

# ---------------------------------------------------------------------------
# Input. Evaluation cost matters (regorus and OPA both pay per rule and per
# function call), so per-setting work uses builtins and lookup tables where it
# can, and values that may be null are normalised once per change.

change := c if {
	c := input.change
	is_object(c)
} else := {}

kind := object.get(change, "kind", "")

change_op := object.get(change, "op", "")

change_name := object.get(change, "name", "(unnamed)")

settings := s if {
	s := object.get(change, "settings", [])
	is_array(s)
} else := []

targets := t if {
	t := object.get(change, "targets", {})
	is_object(t)
} else := {}

groups_added := sort({g | some g in object.get(targets, "groups_added", []); is_string(g)})

groups_removed := sort({g | some g in object.get(targets, "groups_removed", []); is_string(g)})

owners := sort({g | some g in object.get(change, "owners", []); is_string(g)})

exception := e if {
	e := object.get(change, "exception", {})
	is_object(e)
} else := {}

effective := e if {
	e := object.get(change, "effective", [])
	is_array(e)
} else := []

blast := b if {
	b := object.get(change, "blast_radius", {})
	is_object(b)
} else := {}

fleet_devices := object.get(input, ["fleet", "devices"], null)

baseline_removed if {
	kind == "baseline"
	change_op == "removed"
}

exception_granted if {
	kind == "exception"
	change_op != "removed"
}

# ---------------------------------------------------------------------------
# Rendering values into reasons. Only strings, booleans and integers are
# printed; engines may format other numbers differently.

render(v) := v if {
	is_string(v)
	v != ""
	substring(v, 0, 60) == v
} else := concat("", [substring(v, 0, 57), "..."]) if {
	is_string(v)
	v != ""
} else := sprintf("%v", [v]) if {
	is_number(v)
	v == floor(v)
} else := sprintf("%v", [v]) if {
	is_boolean(v)
} else := sprintf("%v items", [count(v)]) if {
	is_array(v)
	count(v) > 1
} else := "1 item" if {
	is_array(v)
	count(v) == 1
} else := "empty list" if {
	v == []
} else := "empty" if {
	v == ""
} else := "unset" if {
	is_null(v)
} else := "a decimal number" if {
	is_number(v)
} else := v.name if {
	is_string(v.name)
} else := "an object"

direction_verbs := {"tighten": "tightened", "loosen": "loosened", "neutral": "changed"}

describe(op, dir, old, new) := sprintf("added (%s)", [render(new)]) if {
	op == "added"
} else := sprintf("removed (was %s)", [render(old)]) if {
	op == "removed"
} else := sprintf("%s (%s -> %s)", [verb, render(old), render(new)]) if {
	verb := object.get(direction_verbs, dir, "changed in an unknown direction")
}

# ---------------------------------------------------------------------------
# Catalogue facts.

critical_categories := {
	"certs": "trust anchors (certs) are always T3",
	"container": "container separation is always T3",
	"enforcement": "enforcement actions are always T3",
}

critical_cause(cat) := "a wipe side effect is always T3" if {
	"wipe" in object.get(cat, "side_effects", [])
} else := "a retire side effect is always T3" if {
	"retire" in object.get(cat, "side_effects", [])
} else := critical_categories[object.get(cat, "category", "")]

# A catalogue tier outside 0..3 (or not a number) is read as 3: fail closed.
catalogue_tier(cat) := t if {
	t := object.get(cat, "default_tier", 3)
	is_number(t)
	t >= 0
	t <= 3
} else := 3

# ---------------------------------------------------------------------------
# Settings.

no_bump := {"n": 0, "text": ""}

direction_bumps := {
	"loosen": {"n": 1, "text": ", +1 for loosening"},
	"tighten": no_bump,
	"neutral": no_bump,
}

loosening(op, dir) := {"n": 1, "text": ", +1 for removing the baseline"} if {
	baseline_removed
} else := {"n": 1, "text": ", +1 for removing the setting"} if {
	op == "removed"
} else := object.get(direction_bumps, dir, {"n": 1, "text": ", +1 for an unknown direction (fail closed)"})

capped(raw) := " (capped at 3)" if {
	raw > 3
} else := ""

setting_contribution(key, what, cat, bump) := contribution(sprintf("%s %s", [key, what]), cat, bump)

# The tier of one setting's change, described by `subject`.
contribution(subject, cat, bump) := {"tier": 3, "reason": r} if {
	not is_object(cat)
	r := sprintf("%s: not in the catalogue, T3 (fail closed)", [subject])
} else := {"tier": 3, "reason": r} if {
	cause := critical_cause(cat)
	r := sprintf("%s: %s", [subject, cause])
} else := {"tier": 0, "reason": r} if {
	cat.category == "cosmetic"
	r := sprintf("%s: cosmetic, T0", [subject])
} else := {"tier": min([3, raw]), "reason": r} if {
	d := catalogue_tier(cat)
	raw := d + bump.n
	r := sprintf("%s: default tier %v%s%s", [subject, d, bump.text, capped(raw)])
}

setting_contributions := [c |
	some s in settings
	op := object.get(s, "op", "")
	dir := object.get(s, "direction", "unknown")
	c := setting_contribution(
		object.get(s, "key", "(unnamed setting)"),
		describe(op, dir, object.get(s, "old", null), object.get(s, "new", null)),
		object.get(s, "catalog", null),
		loosening(op, dir),
	)
]

# A setting missing from the catalogue (or without the flag) is not
# rollback-effective: fail closed.
default rollback_effective := true

rollback_effective := false if {
	some s in settings
	cat := object.get(s, "catalog", null)
	not cat.rollback_effective == true
}

rollback_effective := false if {
	some e in effective
	is_object(e)
	cat := object.get(e, "catalog", null)
	not cat.rollback_effective == true
}

# ---------------------------------------------------------------------------
# Targets.

added_contribution := [{"tier": 2, "reason": r}] if {
	count(groups_added) > 0
	r := sprintf(
		"targets widened (+%s): default tier 1, +1 for widening (more devices get this baseline, possibly over a stricter one)",
		[concat(", ", groups_added)],
	)
} else := []

removed_contribution := [{"tier": 2, "reason": r}] if {
	count(groups_removed) > 0
	r := sprintf(
		"targets narrowed (-%s): default tier 1, +1 for loosening (those devices lose this baseline's controls)",
		[concat(", ", groups_removed)],
	)
} else := []

target_contributions := array.concat(added_contribution, removed_contribution)

# ---------------------------------------------------------------------------
# Effective settings: what devices of a target group get, before and after.

# Tightening and neutral effective changes add no contribution of their own;
# any other direction is a loosening, or unknown (fail closed).
effective_bump(dir) := {"n": 1, "text": ", +1 for an effective loosening"} if {
	dir == "loosen"
} else := {"n": 1, "text": ", +1 for an unknown effective direction (fail closed)"}

text_or(v, fallback) := v if {
	is_string(v)
} else := fallback

effective_was(e) := sprintf("%s from %s", [render(object.get(e, "old", null)), x]) if {
	x := object.get(e, "overridden", null)
	is_string(x)
} else := "conflicting values" if {
	object.get(e, "conflict_before", false) == true
} else := "nothing"

effective_what(e, who, key) := sprintf("%s now get conflicting values of %s at equal priority instead of %s", [who, key, effective_was(e)]) if {
	object.get(e, "conflict_after", false) == true
} else := sprintf("%s now get %s %s from %s, overriding %s", [who, key, render(object.get(e, "new", null)), b, effective_was(e)]) if {
	b := object.get(e, "baseline", null)
	is_string(b)
	object.get(e, "overridden_applies", false) == true
} else := sprintf("%s now get %s %s from %s instead of %s", [who, key, render(object.get(e, "new", null)), b, effective_was(e)]) if {
	b := object.get(e, "baseline", null)
	is_string(b)
} else := sprintf("%s no longer get %s from any baseline (was %s)", [who, key, effective_was(e)])

effective_contributions := [c |
	some e in effective
	is_object(e)
	dir := object.get(e, "direction", "unknown")
	not dir in {"tighten", "neutral"}
	who := sprintf(
		"%s devices in group %s",
		[text_or(object.get(e, "platform", null), "(any platform)"), text_or(object.get(e, "group", null), "(unnamed group)")],
	)
	c := contribution(
		effective_what(e, who, text_or(object.get(e, "key", null), "(unnamed setting)")),
		object.get(e, "catalog", null),
		effective_bump(dir),
	)
]

# ---------------------------------------------------------------------------
# Baseline fields outside spec.settings.

field_meanings := {
	"metadata.owners": "owners decide who approves this baseline's changes",
	"spec.priority": "priority decides which baseline wins where targets overlap",
	"spec.platform": "the platform decides which devices get this baseline",
}

changed_fields := f if {
	f := object.get(change, "fields", [])
	is_array(f)
} else := []

field_contributions := [c |
	kind == "baseline"
	some f in changed_fields
	is_object(f)
	meaning := field_meanings[object.get(f, "field", "")]
	c := {"tier": 2, "reason": sprintf(
		"%s changed (%s -> %s): default tier 1, +1 because %s",
		[f.field, render(object.get(f, "old", null)), render(object.get(f, "new", null)), meaning],
	)}
]

# ---------------------------------------------------------------------------
# Exceptions. An exempted setting is an object {key, catalog} or, from a
# hand-written caller, a bare key (then uncatalogued: fail closed).

exempted_contribution(key, cat) := {"tier": 3, "reason": r} if {
	not is_object(cat)
	r := sprintf("exempts %s: not in the catalogue, T3 (fail closed)", [key])
} else := {"tier": 3, "reason": r} if {
	cause := critical_cause(cat)
	r := sprintf("exempts %s: %s", [key, cause])
} else := {"tier": 0, "reason": r} if {
	cat.category == "cosmetic"
	r := sprintf("exempts %s: cosmetic, T0", [key])
} else := {"tier": min([3, raw]), "reason": r} if {
	d := catalogue_tier(cat)
	raw := d + 1
	r := sprintf("exempts %s: default tier %v, +1 for exempting a control%s", [key, d, capped(raw)])
}

exempted_settings := e if {
	e := object.get(exception, "settings", [])
	is_array(e)
} else := []

# regorus (0.5) cannot schedule a comprehension in the head of a rule that has
# a body, so comprehensions live in body-less rules like these.
exempted_contributions := array.concat(
	[c | some key in exempted_settings; is_string(key); c := exempted_contribution(key, null)],
	[c |
		some e in exempted_settings
		is_object(e)
		c := exempted_contribution(object.get(e, "key", "(unnamed setting)"), object.get(e, "catalog", null))
	],
)

exception_contributions := array.concat([{"tier": 2, "reason": r}], exempted_contributions) if {
	exception_granted
	r := sprintf(
		"exception %s on baseline %s: at least T2 (it exempts devices from controls)",
		[change_name, object.get(exception, "baseline", "(none)")],
	)
}

exception_days := object.get(exception, "days_until_expiry", null)

violation contains "exception has no expiry date" if {
	not is_number(exception_days)
}

violation contains msg if {
	is_number(exception_days)
	exception_days > 90
	msg := sprintf("exception expires in %v days; at most 90 days ahead are allowed", [exception_days])
}

violation contains msg if {
	is_number(exception_days)
	exception_days < 0
	msg := sprintf("exception has already expired (%v days ago)", [0 - exception_days])
}

violation contains "exception has no reason" if {
	not has_text(object.get(exception, "reason", null))
}

violation contains "exception exempts no settings" if {
	count(exempted_settings) == 0
}

violation contains "exception names no baseline" if {
	not has_text(object.get(exception, "baseline", null))
}

has_text(s) if {
	is_string(s)
	trim_space(s) != ""
}

# Violations only concern exceptions being granted or changed; removing one is
# always allowed.
violations := sort(violation) if {
	exception_granted
} else := []

# ---------------------------------------------------------------------------
# Change-level contributions, by kind.

governance_file := f if {
	f := object.get(change, "governance_file", null)
	is_string(f)
} else := f if {
	f := object.get(change, "path", null)
	is_string(f)
} else := change_name

kind_contributions := [{"tier": 3, "reason": r}] if {
	kind == "governance"
	r := sprintf("governance file %s changed: governance changes are always T3", [governance_file])
} else := exception_contributions if {
	exception_granted
} else := [{"tier": 1, "reason": r}] if {
	kind == "exception"
	r := sprintf("exception %s removed: exempted devices return under the baseline's controls", [change_name])
} else := [{"tier": 1, "reason": r}] if {
	baseline_removed
	r := sprintf("baseline %s removed: every setting it set counts as loosened", [change_name])
} else := [] if {
	kind == "baseline"
} else := [{"tier": 3, "reason": r}] if {
	r := sprintf("unknown change kind %v: T3 (fail closed)", [kind])
}

contributions := array.concat(
	kind_contributions,
	array.concat(
		setting_contributions,
		array.concat(field_contributions, array.concat(target_contributions, effective_contributions)),
	),
)

base_tier := max(array.concat([0], [c.tier | some c in contributions]))

# ---------------------------------------------------------------------------
# Blast radius. Prefer the fraction the caller computed; fall back to device
# counts (integer arithmetic, exact in every engine).

blast_devices := object.get(blast, "devices", null)

blast_over if {
	f := object.get(blast, "fleet_fraction", null)
	is_number(f)
	f > 0.1
}

blast_over if {
	not is_number(object.get(blast, "fleet_fraction", null))
	is_number(blast_devices)
	is_number(fleet_devices)
	fleet_devices > 0
	blast_devices * 10 > fleet_devices
}

blast_count := sprintf(" (%v of %v devices)", [blast_devices, fleet_devices]) if {
	is_number(blast_devices)
	blast_devices == floor(blast_devices)
	is_number(fleet_devices)
	fleet_devices == floor(fleet_devices)
} else := sprintf(" (%v devices)", [blast_devices]) if {
	is_number(blast_devices)
	blast_devices == floor(blast_devices)
} else := ""

blast_contribution := [{"n": 1, "reason": r}] if {
	base_tier >= 1
	blast_over
	r := sprintf("blast radius over 10%% of the fleet%s: +1%s", [blast_count, capped(base_tier + 1)])
} else := []

tier := min([3, base_tier + sum([b.n | some b in blast_contribution])])

explained := array.concat(
	[c.reason | some c in contributions],
	[b.reason | some b in blast_contribution],
)

reasons := explained if {
	count(explained) > 0
} else := ["no setting or target change: T0"]

# ---------------------------------------------------------------------------
# Requirements by tier (DESIGN 3). T2 goes to the owners; a baseline without
# owners falls back to mdm-security rather than to anyone. For T3 mdm-security
# comes first and must supply one of the two approvals.

security_and_owners := array.concat(["mdm-security"], [g | some g in owners; g != "mdm-security"])

owner_groups := owners if {
	count(owners) > 0
} else := ["mdm-security"]

requirements := {
	"approvals": 0,
	"approver_groups": [],
	"window": null,
	"soak_multiplier": 1.0,
	"fresh_approval_per_ring": false,
} if {
	tier == 0
} else := {
	"approvals": 1,
	"approver_groups": [],
	"window": null,
	"soak_multiplier": 1.0,
	"fresh_approval_per_ring": false,
} if {
	tier == 1
} else := {
	"approvals": 1,
	"approver_groups": owner_groups,
	"window": null,
	"soak_multiplier": 1.0,
	"fresh_approval_per_ring": false,
} if {
	tier == 2
} else := {
	"approvals": 2,
	"approver_groups": security_and_owners,
	"window": "business-hours",
	"soak_multiplier": 2.0,
	"fresh_approval_per_ring": true,
}

# ---------------------------------------------------------------------------
# The decision.

decision := {
	"tier": tier,
	"reasons": reasons,
	"requirements": requirements,
	"rollback_effective": rollback_effective,
	"violations": violations,
}
