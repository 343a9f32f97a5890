package checksumdb

import (
	"errors"
	"fmt"
	"testing"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

func newDB(t *testing.T, db *testenv.SumDB) *DB {
	t.Helper()
	disk, err := cachetier.NewDiskTier(cachetier.DiskConfig{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	tiers := cachetier.NewTiered(nil, disk)
	t.Cleanup(func() { tiers.Close() })
	d, err := New(Config{NameOrKey: db.VKey, URL: db.URL, Cache: tiers})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for _, c := range []Config{
		{NameOrKey: "sum.nobody.example", URL: "https://x"},
		{NameOrKey: "sum.golang.org+bad+key", URL: "https://x"},
		{NameOrKey: "sum.golang.org"},
		{NameOrKey: "sum.golang.org", URL: "ftp://x"},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	m := testenv.Module{Path: "example.com/v", Version: "v1.0.0", Files: map[string]string{"v.go": "package v\n"}}
	db := testenv.NewSumDB(t, "sum.unit.test", m)
	d := newDB(t, db)
	if d.Name() != "sum.unit.test" {
		t.Errorf("name %q", d.Name())
	}
	if err := d.VerifyMod(m.Path, m.Version, m.Mod()); err != nil {
		t.Errorf("genuine go.mod: %v", err)
	}
	err := d.VerifyMod(m.Path, m.Version, []byte("module example.com/v\n// tampered\n"))
	var mm *MismatchError
	if !errors.As(err, &mm) || mm.Got == mm.Want {
		t.Errorf("tampered go.mod: %v", err)
	}
	if err := d.VerifyMod("example.com/unknown", "v1.0.0", m.Mod()); err == nil || errors.As(err, &mm) {
		t.Errorf("module unknown to the database: %v; want a lookup error, not a mismatch", err)
	}
	latest, err := d.Remote(t.Context(), "/latest")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CheckSigned(latest); err != nil {
		t.Errorf("genuine signed tree: %v", err)
	}
	latest[len(latest)-5] ^= 1
	if err := d.CheckSigned(latest); err == nil {
		t.Error("tampered signed tree accepted")
	}
}

// The sumdb client holds every record and tile it read; it is replaced
// every clientLookups lookups, and the one after it still verifies (and
// refuses) against the tree the first had reached.
func TestClientReplacedAfterLookups(t *testing.T) {
	t.Parallel()
	var mods []testenv.Module
	for i := range clientLookups + 10 {
		mods = append(mods, testenv.Module{Path: fmt.Sprintf("example.com/m%d", i), Version: "v1.0.0", Files: map[string]string{"m.go": "package m\n"}})
	}
	db := testenv.NewSumDB(t, "sum.unit.test", mods...)
	d := newDB(t, db)
	first := d.client.Load()
	for _, m := range mods[:clientLookups] {
		if err := d.VerifyMod(m.Path, m.Version, m.Mod()); err != nil {
			t.Fatalf("%s: %v", m.Path, err)
		}
	}
	if d.client.Load() == first {
		t.Fatalf("the sumdb client was not replaced after %d lookups", clientLookups)
	}
	for _, m := range mods[clientLookups:] {
		if err := d.VerifyMod(m.Path, m.Version, m.Mod()); err != nil {
			t.Errorf("%s, by the next client: %v", m.Path, err)
		}
	}
	var mm *MismatchError
	if err := d.VerifyMod(mods[0].Path, mods[0].Version, []byte("module example.com/m0\n// tampered\n")); !errors.As(err, &mm) {
		t.Errorf("tampered go.mod by the next client: %v; want a mismatch", err)
	}
}
