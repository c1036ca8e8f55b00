-- Completed downloads are cumulative: each process adds what it saw, once
-- per batch (ledger: chihaya_flush_batches), so counts survive restarts
-- and processes leaving. chihaya_swarms.completed is now only the count
-- the process holds in memory, for diagnosis; nothing sums it.
CREATE TABLE chihaya_torrent_completed (
	info_hash      bytea       PRIMARY KEY CHECK (length(info_hash) = 20),
	completed      bigint      NOT NULL CHECK (completed >= 0),
	last_completed timestamptz NOT NULL
);

-- Keep the counts of the processes live at upgrade time. A process that
-- restarts onto the new binary restores its snapshot, takes those counts
-- as its baseline and only adds downloads completed after.
INSERT INTO chihaya_torrent_completed (info_hash, completed, last_completed)
SELECT info_hash, completed, last_activity
FROM chihaya_torrent_stats
WHERE completed > 0;

-- Per-torrent counts: seeders and leechers summed over the processes
-- whose heartbeat is fresh; completed is the cumulative count. A torrent
-- with completed downloads and no live peers has a row with zero seeders
-- and leechers; last_activity is the later of its last announce seen by a
-- live process and its last completed download.
CREATE OR REPLACE VIEW chihaya_torrent_stats AS
WITH live AS (
	SELECT s.info_hash,
	       sum(s.seeders)::bigint  AS seeders,
	       sum(s.leechers)::bigint AS leechers,
	       max(s.last_activity)    AS last_activity
	FROM chihaya_swarms s
	JOIN chihaya_processes p ON p.id = s.process
	WHERE p.last_flush > now() - p.stale_after
	GROUP BY s.info_hash
)
SELECT coalesce(l.info_hash, c.info_hash)                AS info_hash,
       coalesce(l.seeders, 0)                            AS seeders,
       coalesce(l.leechers, 0)                           AS leechers,
       coalesce(c.completed, 0)                          AS completed,
       greatest(l.last_activity, c.last_completed)       AS last_activity,
       c.last_completed
FROM live l
FULL JOIN chihaya_torrent_completed c ON c.info_hash = l.info_hash;
