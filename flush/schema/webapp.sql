-- A sample web-application schema for chihaya's private mode.
--
-- chihaya never writes these relations; it reads them at start, keeps an
-- in-memory copy, and follows changes through LISTEN/NOTIFY on the channel
-- chihaya_rules (configurable). A full reload every 5 minutes (configurable)
-- and after every reconnection of the listener repairs anything a lost
-- notification missed.
--
-- The contract is the column names and types below. The relation names are
-- configurable (RulesConfig.UsersTable, TorrentsTable, ClientsTable; they may
-- be schema-qualified, "app.users"), so an operator whose tables look
-- different can point chihaya at views such as
--
--   CREATE VIEW chihaya_users AS
--     SELECT member_id AS id, torrent_pass AS passkey,
--            NOT banned AS enabled, download_ok AS can_download
--     FROM members;
--
-- and attach the triggers below to the underlying tables, with payloads
-- naming the view's id. Start-up fails with a message naming the relation or
-- column that is missing.
--
-- Notification payloads are '<kind>:<id>':
--   user:<id>     reload that users row (absent: forget the user)
--   torrent:<id>  reload that torrents row (absent: forget the torrent)
--   client        reload the whole allowed_clients list; 'client:<hex
--                 prefix>' is accepted too and does the same
-- Any other payload makes chihaya reload everything, so a script may send
-- NOTIFY chihaya_rules, 'reload' after a bulk change. Notifications are
-- delivered at COMMIT, so chihaya reads the committed row. A bulk change
-- that fires very many notifications at once is coalesced into a few
-- queries, or into one full reload.

-- users: who may announce. A passkey is exactly 32 characters and appears in
-- the announce URL: http://tracker.example/<passkey>/announce, or
-- udp://tracker.example:6969/<passkey>/announce (BEP 41). A disabled user is
-- refused ("account disabled"); a user who may not download is refused while
-- the client still has bytes left ("account may not download") but may seed.
-- Ids are non-negative.
CREATE TABLE users (
	id           integer PRIMARY KEY CHECK (id >= 0),
	passkey      text    NOT NULL UNIQUE CHECK (length(passkey) = 32),
	enabled      boolean NOT NULL DEFAULT true,
	can_download boolean NOT NULL DEFAULT true
);

-- torrents: what may be announced. A v1 torrent has info_hash (SHA-1, 20
-- bytes), a v2 torrent info_hash_v2 (SHA-256, 32 bytes), a hybrid both.
-- Clients announce a v2 hash truncated to 20 bytes (BEP 52); chihaya
-- accepts a hybrid torrent under either hash and counts both as the same
-- torrent id. A torrent that is not allowed is refused ("torrent not
-- allowed"); one that is absent, "torrent not registered".
CREATE TABLE torrents (
	id           integer PRIMARY KEY CHECK (id >= 0),
	info_hash    bytea   UNIQUE CHECK (length(info_hash) = 20),
	info_hash_v2 bytea   UNIQUE CHECK (length(info_hash_v2) = 32),
	allowed      boolean NOT NULL DEFAULT true,
	CHECK (info_hash IS NOT NULL OR info_hash_v2 IS NOT NULL)
);

-- allowed_clients: peer_id prefixes of the clients that may announce, such
-- as '\x2d7142' ('-qB', qBittorrent) or '\x2d5452' ('-TR', Transmission).
-- An EMPTY table allows every client. A prefix longer than 20 bytes matches
-- no peer_id.
CREATE TABLE allowed_clients (
	peer_id_prefix bytea PRIMARY KEY
);

-- Triggers: one notification per changed row, on the channel chihaya
-- LISTENs to. An update that changes an id notifies both ids.

CREATE FUNCTION chihaya_notify_user() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP IN ('UPDATE', 'DELETE') THEN
		PERFORM pg_notify('chihaya_rules', 'user:' || OLD.id);
	END IF;
	IF TG_OP IN ('INSERT', 'UPDATE') THEN
		PERFORM pg_notify('chihaya_rules', 'user:' || NEW.id);
	END IF;
	RETURN NULL;
END
$$;

CREATE TRIGGER chihaya_notify AFTER INSERT OR UPDATE OR DELETE ON users
	FOR EACH ROW EXECUTE FUNCTION chihaya_notify_user();

CREATE FUNCTION chihaya_notify_torrent() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP IN ('UPDATE', 'DELETE') THEN
		PERFORM pg_notify('chihaya_rules', 'torrent:' || OLD.id);
	END IF;
	IF TG_OP IN ('INSERT', 'UPDATE') THEN
		PERFORM pg_notify('chihaya_rules', 'torrent:' || NEW.id);
	END IF;
	RETURN NULL;
END
$$;

CREATE TRIGGER chihaya_notify AFTER INSERT OR UPDATE OR DELETE ON torrents
	FOR EACH ROW EXECUTE FUNCTION chihaya_notify_torrent();

-- The client list is small: any change reloads all of it, once per
-- statement.
CREATE FUNCTION chihaya_notify_clients() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('chihaya_rules', 'client');
	RETURN NULL;
END
$$;

CREATE TRIGGER chihaya_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
	ON allowed_clients
	FOR EACH STATEMENT EXECUTE FUNCTION chihaya_notify_clients();

-- TRUNCATE of users or torrents fires no row trigger: send a full reload.
CREATE FUNCTION chihaya_notify_reload() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('chihaya_rules', 'reload');
	RETURN NULL;
END
$$;

CREATE TRIGGER chihaya_notify_truncate AFTER TRUNCATE ON users
	FOR EACH STATEMENT EXECUTE FUNCTION chihaya_notify_reload();
CREATE TRIGGER chihaya_notify_truncate AFTER TRUNCATE ON torrents
	FOR EACH STATEMENT EXECUTE FUNCTION chihaya_notify_reload();
