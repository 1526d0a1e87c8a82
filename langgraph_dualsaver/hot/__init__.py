"""The hot tier: ``RedisHotSaver`` on Redis or Valkey (key layout, Lua scripts,
listing, admin, the connection and what a write waits for)."""
