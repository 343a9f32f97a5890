package vulndb

import (
	"encoding/json"
	"testing"
)

func TestAffects(t *testing.T) {
	var e Entry
	if err := json.Unmarshal([]byte(`{"id":"GO-2099-0002","affected":[
		{"package":{"name":"example.com/m","ecosystem":"Go"},"ranges":[{"type":"SEMVER","events":[
			{"introduced":"0"},{"fixed":"1.2.3"},{"introduced":"1.5.0"},{"fixed":"1.5.2"},{"introduced":"2.0.0"}]}]},
		{"package":{"name":"example.com/other","ecosystem":"Go"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"}]}]}]}`), &e); err != nil {
		t.Fatal(err)
	}
	for v, want := range map[string]bool{
		"v0.1.0": true, "v1.2.2": true, "v1.2.3": false, "v1.4.9": false, "v1.5.0": true, "v1.5.1": true,
		"v1.5.2": false, "v1.9.0": false, "v2.0.0": true, "v2.3.0-pre": true,
	} {
		if got := e.affects("example.com/m", v); got != want {
			t.Errorf("%s: affected %v, want %v", v, got, want)
		}
	}
	if e.affects("example.com/third", "v1.0.0") {
		t.Error("a module the entry does not name is affected")
	}
}

func TestKnownFiles(t *testing.T) {
	d, err := New(Config{URL: "https://vuln.example", Cache: nil})
	if err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]bool{
		"index/db.json": true, "index/modules.json": true, "ID/GO-2023-1234.json": true, "ID/GO-2023-12345.json": true,
		"ID/../etc/passwd": false, "ID/GO-2023-1234": false, "index/other.json": false, "ID/CVE-2023-1234.json": false,
	} {
		if got := d.known(f); got != want {
			t.Errorf("%s: known %v, want %v", f, got, want)
		}
	}
}
