package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/chihaya/chihaya/peertable"
)

// restoreSnapshot loads the snapshot file into the table, if there is
// one. A missing file is a first start. A file that peertable refuses is
// moved aside to PATH.bad, so that the next stop does not overwrite it,
// and the tracker starts empty. A file that cannot be read at all (or a
// bad one that cannot be moved) stops start-up: the stop would otherwise
// replace it.
func (d *daemon) restoreSnapshot() error {
	path := d.cfg.Snapshot.Path
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		d.log.Info("no snapshot to restore; starting empty", "path", path)
		return nil
	}
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	res, err := d.table.ReadSnapshot(f)
	f.Close()
	switch {
	case errors.Is(err, peertable.ErrBadSnapshot):
		bad := path + ".bad"
		if rerr := os.Rename(path, bad); rerr != nil {
			return fmt.Errorf("snapshot %s: %w; cannot move it aside: %w", path, err, rerr)
		}
		d.log.Error("snapshot refused; starting empty", "path", path, "moved_to", bad, "err", err)
		return nil
	case err != nil:
		return fmt.Errorf("snapshot %s: %w", path, err)
	}
	d.log.Info("snapshot restored", "path", path, "written", res.Written,
		"swarms", res.Swarms, "peers_v4", res.PeersV4, "peers_v6", res.PeersV6)
	return nil
}

// saveSnapshot writes the snapshot file, if one is configured. It
// replaces the file atomically: a temporary file in the same directory
// is written, synced and renamed over it, and the directory is synced,
// so a crash leaves the old snapshot or the new one, never a mix.
func (d *daemon) saveSnapshot() error {
	path := d.cfg.Snapshot.Path
	if path == "" {
		return nil
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	tmp := f.Name()
	w, err := d.table.WriteSnapshot(f, d.cfg.Snapshot.Peers)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("snapshot %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("snapshot %s: sync directory: %w", path, err)
	}
	d.log.Info("snapshot written", "path", path, "bytes", w.Bytes,
		"swarms", w.Swarms, "peers_v4", w.PeersV4, "peers_v6", w.PeersV6)
	return nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
