-- Usernames are unique within a tenant, not across tenants, and logging in names the tenant:
-- creating an account no longer tells one tenant which usernames another tenant uses, and a
-- stranger cannot find another tenant's accounts to throttle them.
ALTER TABLE accounts DROP CONSTRAINT accounts_username_key;
ALTER TABLE accounts ADD CONSTRAINT accounts_tenant_username_key UNIQUE (tenant_id, username);
DROP INDEX accounts_tenant;  -- the unique index above leads with tenant_id
