-- Deployment-wide settings, e.g. the hash of the generated operator key.
CREATE TABLE flashtx.settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);
