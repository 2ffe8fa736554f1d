-- The dispatcher's tables fleet-sync captures (SPEC §2), their updated_at triggers and the publication.
CREATE TABLE IF NOT EXISTS parks (
  id         text PRIMARY KEY,
  name       text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS roles (
  id         text PRIMARY KEY,
  park_id    text NOT NULL REFERENCES parks (id),
  name       text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS roles_park_id_idx ON roles (park_id);

CREATE TABLE IF NOT EXISTS users (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  park_id        text NOT NULL REFERENCES parks (id),
  yandex_uid     text,
  login          text NOT NULL,
  name           text NOT NULL,
  phone          text,
  email          text,
  role_id        text REFERENCES roles (id) ON DELETE SET NULL,
  is_enabled     boolean NOT NULL DEFAULT true,
  is_yandex_team boolean NOT NULL DEFAULT false,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);
-- Keyset pagination of a park's users walks (park_id, id); the sink and the sweep look users up by uid.
CREATE INDEX IF NOT EXISTS users_park_id_id_idx ON users (park_id, id);
CREATE INDEX IF NOT EXISTS users_yandex_uid_idx ON users (yandex_uid) WHERE yandex_uid IS NOT NULL;
CREATE INDEX IF NOT EXISTS users_role_id_idx ON users (role_id) WHERE role_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS call_center_parks (
  park_id             text PRIMARY KEY REFERENCES parks (id),
  project_id          text NOT NULL,
  role_map            jsonb NOT NULL DEFAULT '{}'::jsonb,
  yandex_team_role_id text,
  enabled             boolean NOT NULL DEFAULT false,
  -- set by park/off: whether the roles fleet-sync granted in the project are to be removed
  revoke_on_disable   boolean NOT NULL DEFAULT true,
  enabled_at          timestamptz,
  disabled_at         timestamptz,
  updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION fleet_sync_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS parks_touch_updated_at ON parks;
CREATE TRIGGER parks_touch_updated_at BEFORE UPDATE ON parks
  FOR EACH ROW EXECUTE FUNCTION fleet_sync_touch_updated_at();
DROP TRIGGER IF EXISTS roles_touch_updated_at ON roles;
CREATE TRIGGER roles_touch_updated_at BEFORE UPDATE ON roles
  FOR EACH ROW EXECUTE FUNCTION fleet_sync_touch_updated_at();
DROP TRIGGER IF EXISTS users_touch_updated_at ON users;
CREATE TRIGGER users_touch_updated_at BEFORE UPDATE ON users
  FOR EACH ROW EXECUTE FUNCTION fleet_sync_touch_updated_at();
DROP TRIGGER IF EXISTS call_center_parks_touch_updated_at ON call_center_parks;
CREATE TRIGGER call_center_parks_touch_updated_at BEFORE UPDATE ON call_center_parks
  FOR EACH ROW EXECUTE FUNCTION fleet_sync_touch_updated_at();

-- FULL: an update or delete carries the whole old row, so a delete names the user's old park and uid,
-- and an unchanged TOASTed column in an update can be filled from the old row instead of becoming null.
ALTER TABLE users REPLICA IDENTITY FULL;
ALTER TABLE roles REPLICA IDENTITY FULL;
ALTER TABLE call_center_parks REPLICA IDENTITY FULL;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'fleet_sync') THEN
    CREATE PUBLICATION fleet_sync FOR TABLE users, roles, call_center_parks;
  END IF;
END
$$;
