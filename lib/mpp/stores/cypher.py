"""The Cypher statements of the graph store (``mpp.stores.neo4j``), all parameterized.

The graph:
    (User {id, first_seen, last_seen})-[:SENT]->(Message {id, ts, text, channel, locale, model,
    campaign_id})-[:ABOUT {score, source}]->(Campaign {id}),
    (Message)-[:HAS_INTENT {score}]->(Intent {name})

Times (``ts``, ``first_seen``, ``last_seen``) are epoch milliseconds, UTC.

Why MERGE_MESSAGES has this shape: on the local Neo4j 5.26, 5,000 messages written as one
statement with FOREACH for the links ran 3-4 times faster than separate statements in one
transaction (MERGE nodes, then MATCH + MERGE relationships); see services/graph-writer/README.md.
"""

from __future__ import annotations

from typing import Literal, LiteralString

SCHEMA: list[LiteralString] = [
    "CREATE CONSTRAINT user_id_unique IF NOT EXISTS FOR (n:User) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT message_id_unique IF NOT EXISTS FOR (n:Message) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT campaign_id_unique IF NOT EXISTS FOR (n:Campaign) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT intent_name_unique IF NOT EXISTS FOR (n:Intent) REQUIRE n.name IS UNIQUE",
    # The recommender reads a user's recent messages.
    "CREATE INDEX message_ts IF NOT EXISTS FOR (n:Message) ON (n.ts)",
]

# One statement per batch. Users come first, one row each with the batch's earliest and latest
# message time (setting them once per message cost about a tenth of the statement's time);
# the messages then MATCH their user. The messages come as columns, one list per property,
# indexed by the row number: a list of maps would carry every key again in every row, which
# cost this process about 2 microseconds a row to pack and Neo4j a few more to read (measured
# alone on 8,000 chitchat messages, ``bench/streaming.py``'s rows). The two CALL blocks drop
# the links a newer enrichment no longer has; FOREACH keeps one row per message (no
# cardinality blow-up) while merging its links. A link is [campaign id, score, source] or
# [intent name, score].
MERGE_MESSAGES: LiteralString = """
UNWIND $users AS usr
MERGE (u:User {id: usr.id})
SET u.first_seen = CASE WHEN u.first_seen IS NULL OR usr.first < u.first_seen
                        THEN usr.first ELSE u.first_seen END,
    u.last_seen = CASE WHEN u.last_seen IS NULL OR usr.last > u.last_seen
                       THEN usr.last ELSE u.last_seen END
WITH count(*) AS users
UNWIND range(0, size($message_id) - 1) AS i
MATCH (u:User {id: $user_id[i]})
MERGE (m:Message {id: $message_id[i]})
WITH u, m, i
WHERE NOT EXISTS { MATCH (o:User)-[:SENT]->(m) WHERE o.id <> u.id }
SET m.ts = $ts[i], m.text = $text[i], m.channel = $channel[i], m.locale = $locale[i],
    m.model = $model[i], m.campaign_id = $campaign_id[i]
MERGE (u)-[:SENT]->(m)
WITH m, $campaigns[i] AS campaigns, $intents[i] AS intents
CALL (m, campaigns) {
  MATCH (m)-[r:ABOUT]->(c:Campaign)
  WHERE NOT c.id IN [l IN campaigns | l[0]]
  DELETE r
}
CALL (m, intents) {
  MATCH (m)-[r:HAS_INTENT]->(i:Intent)
  WHERE NOT i.name IN [l IN intents | l[0]]
  DELETE r
}
FOREACH (l IN campaigns |
  MERGE (c:Campaign {id: l[0]})
  MERGE (m)-[r:ABOUT]->(c)
  SET r.score = l[1], r.source = l[2])
FOREACH (l IN intents |
  MERGE (i:Intent {name: l[0]})
  MERGE (m)-[r:HAS_INTENT]->(i)
  SET r.score = l[1])
"""

# Who sent each of the ids (those stored).
MESSAGE_OWNERS: LiteralString = """
UNWIND $ids AS id
MATCH (u:User)-[:SENT]->(m:Message {id: id})
RETURN id, u.id AS user_id
"""

DELETE_USER: LiteralString = """
MATCH (u:User {id: $user_id})
OPTIONAL MATCH (u)-[:SENT]->(m:Message)
WITH u, collect(m) AS messages
FOREACH (m IN messages | DETACH DELETE m)
DETACH DELETE u
RETURN size(messages) AS messages
"""

COUNTS: LiteralString = """
UNWIND $user_ids AS id
MATCH (u:User {id: id})
RETURN count(u) AS users,
       sum(COUNT { (u)-[:SENT]->(:Message) }) AS messages,
       sum(COUNT { (u)-[:SENT]->(:Message)-[:ABOUT]->(:Campaign) }) AS about,
       sum(COUNT { (u)-[:SENT]->(:Message)-[:HAS_INTENT]->(:Intent) }) AS has_intent
"""

COUNT_NODES: dict[str, LiteralString] = {
    "User": "MATCH (n:User) WHERE n.id IN $keys RETURN count(n) AS c",
    "Message": "MATCH (n:Message) WHERE n.id IN $keys RETURN count(n) AS c",
    "Campaign": "MATCH (n:Campaign) WHERE n.id IN $keys RETURN count(n) AS c",
    "Intent": "MATCH (n:Intent) WHERE n.name IN $keys RETURN count(n) AS c",
}
Label = Literal["User", "Message", "Campaign", "Intent"]
# The recommender's read of a user, in one round trip (two reads apart cost a second round
# trip and session, about half the source's time at the median): the user's $recent newest
# messages (found once, for both parts) with their intents and campaigns, and the campaigns of
# users who share their intents or campaigns (co-engagement); each shared intent or campaign
# contributes at most $per_node peers, so a popular intent costs a bounded amount. Each part
# is a list of lists, the peers' most talked about first; an unknown user gets one row of two
# empty lists (OPTIONAL MATCH, and aggregations without a grouping key).
USER_GRAPH: LiteralString = """
OPTIONAL MATCH (u:User {id: $user_id})-[:SENT]->(m:Message)
WITH u, m ORDER BY m.ts DESC LIMIT $recent
WITH u, collect(m) AS recent
CALL (recent) {
  UNWIND recent AS m
  OPTIONAL MATCH (m)-[hi:HAS_INTENT]->(i:Intent)
  WITH m, collect([i.name, hi.score]) AS intents
  OPTIONAL MATCH (m)-[a:ABOUT]->(c:Campaign)
  WITH m, intents, collect([c.id, a.score]) AS campaigns
  RETURN collect([m.id, m.ts, intents, campaigns]) AS messages
}
CALL (u, recent) {
  UNWIND recent AS m
  MATCH (m)-[:HAS_INTENT|ABOUT]->(x)
  WITH collect(DISTINCT x) AS shared
  UNWIND shared AS x
  CALL (x, u) {
    MATCH (x)<-[:HAS_INTENT|ABOUT]-(:Message)<-[:SENT]-(v:User)
    WHERE v <> u
    RETURN DISTINCT v LIMIT $per_node
  }
  WITH v, collect(DISTINCT coalesce(x.name, x.id)) AS via
  ORDER BY size(via) DESC LIMIT $peers
  MATCH (v)-[:SENT]->(:Message)-[:ABOUT]->(c:Campaign)
  WITH c, count(DISTINCT v) AS peers, collect(via[0])[0] AS via
  ORDER BY peers DESC LIMIT $limit
  RETURN collect([c.id, peers, via]) AS peers
}
RETURN messages, peers
"""
