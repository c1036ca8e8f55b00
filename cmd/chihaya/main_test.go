package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunFlags(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[udp]\nworkerz = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		stdout  string // substring wanted on stdout
		wantErr string // substring wanted in the error; "" means success
	}{
		{"version", []string{"-version"}, "chihaya ", ""},
		{"stray argument", []string{"serve"}, "", `unexpected argument "serve"`},
		{"unknown flag", []string{"-bogus"}, "", "flag provided but not defined"},
		{"missing file", []string{"-config", filepath.Join(dir, "nope.toml")}, "", "nope.toml"},
		{"bad key", []string{"-config", bad}, "", "unknown key udp.workerz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(tt.args, &stdout, &stderr)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("run(%q) = %v, want success", tt.args, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("run(%q) = %v, want an error containing %q", tt.args, err, tt.wantErr)
			}
			if !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("run(%q) printed %q, want it to contain %q", tt.args, stdout.String(), tt.stdout)
			}
		})
	}
}
