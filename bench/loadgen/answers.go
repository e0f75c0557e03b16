package main

import (
	"bytes"

	"google.golang.org/protobuf/encoding/protowire"
)

// answerCheck says whether an answer counts as a hit (it says it came from a cache) and
// whether it is what a good answer must look like.
//
// Bytes checks look for a substring of the body (HTTP's JSON: `"cached":true`); field checks
// read the top level of a protobuf message (gRPC): a hit field is a varint field (a bool) set
// to a non-zero value, an expected field is a field present at least once (a non-empty
// repeated field, e.g. RecommendResponse.items).
type answerCheck struct {
	hitBytes    []byte
	hitField    int
	expectBytes []byte
	expectField int
}

func (c *answerCheck) countsHits() bool {
	return len(c.hitBytes) > 0 || c.hitField > 0
}

func (c *answerCheck) isHit(body []byte) bool {
	if len(c.hitBytes) > 0 && !bytes.Contains(body, c.hitBytes) {
		return false
	}
	if c.hitField > 0 && !varintSet(body, protowire.Number(c.hitField)) {
		return false
	}
	return c.countsHits()
}

func (c *answerCheck) isExpected(body []byte) bool {
	if len(c.expectBytes) > 0 && !bytes.Contains(body, c.expectBytes) {
		return false
	}
	return c.expectField <= 0 || fieldPresent(body, protowire.Number(c.expectField))
}

// walk calls visit for each top-level field of a serialized message until visit returns
// false; a malformed message stops the walk.
func walk(message []byte, visit func(protowire.Number, protowire.Type, []byte) bool) {
	for len(message) > 0 {
		number, kind, n := protowire.ConsumeTag(message)
		if n < 0 {
			return
		}
		size := protowire.ConsumeFieldValue(number, kind, message[n:])
		if size < 0 {
			return
		}
		if !visit(number, kind, message[n:n+size]) {
			return
		}
		message = message[n+size:]
	}
}

func varintSet(message []byte, field protowire.Number) bool {
	set := false
	walk(message, func(number protowire.Number, kind protowire.Type, value []byte) bool {
		if number == field && kind == protowire.VarintType {
			v, _ := protowire.ConsumeVarint(value)
			set = v != 0 // the last occurrence wins, as protobuf parsers read it
		}
		return true
	})
	return set
}

func fieldPresent(message []byte, field protowire.Number) bool {
	present := false
	walk(message, func(number protowire.Number, _ protowire.Type, _ []byte) bool {
		present = number == field
		return !present
	})
	return present
}
