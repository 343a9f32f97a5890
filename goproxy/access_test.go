package goproxy

import (
	"net/http"
	"strings"
	"testing"
)

func TestAccessDecide(t *testing.T) {
	acc, err := Access{
		Identify: func(*http.Request) Subject { return Subject{} },
		Rules: []AccessRule{
			{Pattern: "github.com/acme/payments", Subjects: []string{"group:payments"}},
			{Pattern: "github.com/acme/*", Deny: true, Subjects: []string{"group:contractors"}},
			{Pattern: "github.com/acme/*", Subjects: []string{"group:engineering", "user:root"}},
			{Pattern: "*", Subjects: []string{"anyone"}},
		},
	}.compile()
	if err != nil {
		t.Fatal(err)
	}
	anon := Subject{}
	eng := Subject{User: "erin", Groups: []string{"engineering"}}
	pay := Subject{User: "pat", Groups: []string{"payments", "engineering"}}
	con := Subject{User: "carl", Groups: []string{"contractors", "engineering"}}
	root := Subject{User: "root"}
	for _, c := range []struct {
		mod            string
		who            Subject
		allowed, audit bool
	}{
		{"golang.org/x/text", anon, true, false},
		{"golang.org/x/text", eng, true, false},
		{"github.com/acme/payments", pay, true, true},
		{"github.com/acme/payments/v2", pay, true, true}, // a pattern covers the paths below it
		{"GitHub.com/Acme/Payments", pay, true, true},    // in any letter case, as private is
		{"github.com/acme/payments", eng, false, true},   // the first match decides: payments only
		{"github.com/acme/payments", anon, false, true},
		{"github.com/acme/tools", eng, true, true},
		{"github.com/acme/tools", con, false, true}, // the deny rule names contractors
		{"github.com/acme/tools", root, true, true},
		{"github.com/acme/tools", anon, false, true},
		{"github.com/acme/tools", Subject{Groups: []string{"engineering"}}, false, true}, // groups without a user
	} {
		d := acc.decide(c.mod, c.who)
		if d.allowed != c.allowed || d.audited != c.audit {
			t.Errorf("%s for %+v: allowed %v audited %v (rule %s), want %v %v", c.mod, c.who, d.allowed, d.audited, d.rule, c.allowed, c.audit)
		}
	}

	closed, err := Access{Identify: acc.Identify, Rules: []AccessRule{{Pattern: "example.com/x", Subjects: []string{"authenticated"}}}}.compile()
	if err != nil {
		t.Fatal(err)
	}
	if d := closed.decide("example.com/y", eng); d.allowed {
		t.Error("a module no rule matches was allowed")
	}
	if closed.mayReadAny(anon) || !closed.mayReadAny(eng) {
		t.Error("mayReadAny: anonymous may read nothing of a closed mirror, a user may")
	}

	for _, bad := range []AccessRule{
		{Pattern: "*", Subjects: []string{"everyone"}},
		{Pattern: "*", Subjects: []string{"group:"}},
		{Pattern: "a,b", Subjects: []string{"anyone"}},
		{Pattern: "[", Subjects: []string{"anyone"}},
		{Pattern: "*"},
	} {
		if _, err := (Access{Identify: acc.Identify, Rules: []AccessRule{bad}}).compile(); err == nil || !strings.Contains(err.Error(), "access") {
			t.Errorf("rule %+v: err %v, want a refusal", bad, err)
		}
	}
}
