package main

import (
	"reflect"
	"slices"
	"strings"

	"github.com/chihaya/chihaya/httpcompat"
	"github.com/chihaya/chihaya/udp"
)

// reloadable are the keys a reload applies to the running daemon. Any
// other key that changes needs a restart: a reload warns about it and
// keeps the running value.
var reloadable = map[string]bool{
	"log.level":               true,
	"tracker.interval":        true,
	"tracker.min_interval":    true,
	"tracker.default_numwant": true,
	"tracker.max_numwant":     true,
	"udp.allow_ip_override":   true,
	"http.allow_ip_param":     true,
	"http.external_ip":        true,
	"http.max_scrape":         true,
	"http.announce_rate":      true,
	"http.announce_burst":     true,
	"udp.connect_rate":        true,
	"udp.connect_burst":       true,
	"udp.announce_rate":       true,
	"udp.announce_burst":      true,
}

// reload reads the config file at path and applies its reloadable keys,
// logging each key it changed and each changed key that needs a restart.
// A file that LoadConfig refuses changes nothing. The peer table, the
// sockets and the connections are never touched. It is safe to call from
// any goroutine while run runs.
func (d *daemon) reload(path string) error {
	next, err := LoadConfig(path)
	if err != nil {
		d.log.Error("reload refused; the running config stays", "err", err)
		return err
	}
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	changed, restart := mergeReloadable(&next, d.live, d.level != nil)
	for _, k := range restart {
		d.log.Warn("reload: key needs a restart; the running value stays", "key", k)
	}
	// The peer lifetime needs a restart, so a longer interval would have
	// clients dropped between their announces: keep the running one.
	if lifetime := d.cfg.peertable().PeerLifetime; next.interval() > lifetime {
		d.log.Warn("reload: tracker.interval would exceed the running peer lifetime; the running interval stays until a restart",
			"interval", next.interval(), "peer_lifetime", lifetime)
		next.Tracker.Interval = d.live.Tracker.Interval
		changed = slices.DeleteFunc(changed, func(k string) bool { return k == "tracker.interval" })
		restart = append(restart, "tracker.interval")
	}
	// LoadConfig has checked every value, so no setter should fail. The
	// tracker's goes first: if it did fail, nothing would have changed.
	if err := d.core.SetConfig(next.tracker()); err != nil {
		d.log.Error("reload refused; the running config stays", "err", err)
		return err
	}
	// The announce policy (intervals, numwant) reaches every frontend
	// through the tracker's config alone; a frontend keeps only what is
	// its own.
	if d.udp != nil {
		d.udp.SetPolicy(udp.Policy{AllowIPOverride: next.UDP.AllowIPOverride})
		// SetLimits gives every source its full burst again: only on a change.
		if lim := next.UDP.limits(); lim != d.live.UDP.limits() {
			if err := d.udp.SetLimits(lim); err != nil {
				d.log.Error("reload: udp rate limits not applied", "err", err)
			}
		}
	}
	if d.http != nil {
		p := httpcompat.Policy{
			AllowIPParam: next.HTTP.AllowIPParam,
			NoExternalIP: next.HTTP.ExternalIP != nil && !*next.HTTP.ExternalIP,
			MaxScrape:    next.HTTP.MaxScrape,
		}
		if err := d.http.SetPolicy(p); err != nil {
			d.log.Error("reload: http policy not applied", "err", err)
		}
		if lim := next.HTTP.limits(); lim != d.live.HTTP.limits() {
			if err := d.http.SetLimits(lim); err != nil {
				d.log.Error("reload: http announce limit not applied", "err", err)
			}
		}
	}
	if d.level != nil {
		opts, _ := next.logHandlerOptions() // checked by LoadConfig
		d.level.Set(opts.Level.Level())
	}
	d.live = next
	d.log.Info("reloaded", "path", path, "changed", strings.Join(changed, " "), "needs_restart", strings.Join(restart, " "))
	return nil
}

// mergeReloadable compares next with live key by key. It returns the
// reloadable keys that differ, and the other keys that differ, which it
// sets in next back to their live values. With level false, log.level
// counts as needing a restart.
func mergeReloadable(next *Config, live Config, level bool) (changed, restart []string) {
	nv, lv := reflect.ValueOf(next).Elem(), reflect.ValueOf(live)
	for i, sec := range reflect.VisibleFields(nv.Type()) {
		ns, ls := nv.Field(i), lv.Field(i)
		for j, f := range reflect.VisibleFields(sec.Type) {
			if reflect.DeepEqual(ns.Field(j).Interface(), ls.Field(j).Interface()) {
				continue
			}
			key := sec.Tag.Get("toml") + "." + f.Tag.Get("toml")
			if reloadable[key] && (level || key != "log.level") {
				changed = append(changed, key)
			} else {
				restart = append(restart, key)
				ns.Field(j).Set(ls.Field(j))
			}
		}
	}
	return changed, restart
}
