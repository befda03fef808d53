package verify

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/export-v1 from the generator")

// vectorDir holds a version-1 export: 20 entries of every kind, checkpoints of sizes 8, 16 and
// 20, the one of 16 with a witness cosignature. It pins the format: the generator must still
// write it byte for byte, and it must verify.
const vectorDir = "testdata/export-v1"

func writeVector(t *testing.T, dir string) *testLog {
	l := newTestLog(t, 1).build(20, nil)
	l.write(dir, 8)
	witness, _ := testKey(t, "witness.example/w1", 7)
	writeFile(t, filepath.Join(dir, CheckpointsDir, "16"), l.checkpoint(16, l.signer, witness))
	return l
}

func TestExportVector(t *testing.T) {
	if *update {
		os.RemoveAll(vectorDir)
		writeVector(t, vectorDir)
	}
	fresh := t.TempDir()
	l := writeVector(t, fresh)
	err := filepath.WalkDir(fresh, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(fresh, path)
		if want := readFile(t, path); !bytes.Equal(readFile(t, filepath.Join(vectorDir, rel)), want) {
			t.Errorf("%s differs from what the generator writes now (run with -update if the format changed on purpose)", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("WalkDir: %v", err)
	}
	rep, err := VerifyExport(t.Context(), vectorDir, Options{})
	if err != nil {
		t.Fatalf("VerifyExport(%s): %v", vectorDir, err)
	}
	if rep.Entries != 20 || rep.Checkpoints != 3 || rep.Latest.Root != l.root(20) {
		t.Fatalf("VerifyExport(%s) = %+v", vectorDir, rep)
	}
}
