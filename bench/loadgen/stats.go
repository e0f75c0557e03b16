package main

import (
	"math"
	"slices"
	"strconv"
	"time"
)

// Result is what a run prints: counts, throughput and latency of the successful calls.
type Result struct {
	Proto       string         `json:"proto"`
	Concurrency int            `json:"concurrency"`
	Connections int            `json:"connections,omitempty"`
	Requests    int            `json:"requests"`
	OK          int            `json:"ok"`
	ErrorCount  int            `json:"error_count"`
	Errors      map[string]int `json:"errors"`
	Samples     []string       `json:"error_samples,omitempty"`
	Seconds     float64        `json:"seconds"`
	RPS         float64        `json:"rps"`
	Hits        *int           `json:"hits"`
	HitRate     *number        `json:"hit_rate"`
	Exhausted   bool           `json:"exhausted"`
	LatencyMS   latencies      `json:"latency_ms"`
	GoMaxProcs  int            `json:"gomaxprocs"`
}

// latencies are the successful calls' latency percentiles (nearest rank), in milliseconds.
type latencies struct {
	P50  number `json:"p50"`
	P90  number `json:"p90"`
	P99  number `json:"p99"`
	P999 number `json:"p99.9"`
	Max  number `json:"max"`
	Mean number `json:"mean"`
}

// number is a float that encodes NaN (nothing measured) as JSON's null.
type number float64

func (n number) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(n)) || math.IsInf(float64(n), 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, float64(n), 'f', -1, 64), nil
}

// tally is one worker's record; workers never share one, so recording takes no lock.
type tally struct {
	latencies []time.Duration
	hits      int
	errors    map[string]int
	samples   []string
}

func (t *tally) fail(kind, detail string) {
	t.errors[kind]++
	if len(t.samples) < 3 {
		t.samples = append(t.samples, kind+": "+detail)
	}
}

// percentile is the nearest-rank percentile of sorted durations, in milliseconds.
func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(q*float64(len(sorted)))) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return ms(sorted[rank])
}

func ms(d time.Duration) float64 {
	return float64(d.Nanoseconds()) / 1e6
}

func summarize(result *Result, tallies []*tally, elapsed time.Duration, check *answerCheck) {
	var all []time.Duration
	hits := 0
	result.Errors = map[string]int{}
	for _, t := range tallies {
		all = append(all, t.latencies...)
		hits += t.hits
		for kind, n := range t.errors {
			result.Errors[kind] += n
			result.ErrorCount += n
		}
		for _, s := range t.samples {
			if len(result.Samples) < 5 {
				result.Samples = append(result.Samples, s)
			}
		}
	}
	slices.Sort(all)
	result.OK = len(all)
	result.Requests = result.OK + result.ErrorCount
	result.Seconds = elapsed.Seconds()
	if result.Seconds > 0 {
		result.RPS = float64(result.OK) / result.Seconds
	}
	if check.countsHits() {
		result.Hits = &hits
		rate := number(math.NaN())
		if result.OK > 0 {
			rate = number(float64(hits) / float64(result.OK))
		}
		result.HitRate = &rate
	}
	var sum time.Duration
	for _, d := range all {
		sum += d
	}
	mean := math.NaN()
	if len(all) > 0 {
		mean = ms(sum) / float64(len(all))
	}
	result.LatencyMS = latencies{
		P50:  number(percentile(all, 0.50)),
		P90:  number(percentile(all, 0.90)),
		P99:  number(percentile(all, 0.99)),
		P999: number(percentile(all, 0.999)),
		Max:  number(percentile(all, 1)),
		Mean: number(mean),
	}
}
