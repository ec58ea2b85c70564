package downlink

import (
	"cmp"
	"slices"
	"sync"
)

// Retained keeps the latest payload per topic for the cloud, as retained
// QoS 1 messages: the gateway's remote configuration status. It outlives
// Clients (the gateway starts a new Client on reload); every running
// Client publishes each entry after each connect, and again after each Set
// while connected, until the cloud acknowledges it. Only the latest
// payload of a topic is sent: a Set replaces one not yet sent. It is meant
// for a small fixed set of topics. Safe for concurrent use.
type Retained struct {
	mu      sync.Mutex
	entries map[string]retainedEntry
	gen     uint64
	changed chan struct{}
}

type retainedEntry struct {
	payload []byte
	gen     uint64 // of the Set that stored it
}

// retainedItem is an entry to publish.
type retainedItem struct {
	topic   string
	payload []byte
	gen     uint64
}

// NewRetained returns an empty Retained.
func NewRetained() *Retained {
	return &Retained{entries: map[string]retainedEntry{}, changed: make(chan struct{})}
}

// Set stores payload (copied) as topic's retained message and wakes the
// running Client. An empty payload deletes the cloud's retained message
// of topic (MQTT semantics).
func (r *Retained) Set(topic string, payload []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	r.entries[topic] = retainedEntry{payload: slices.Clone(payload), gen: r.gen}
	close(r.changed)
	r.changed = make(chan struct{})
}

// Get returns topic's latest payload and whether there is one.
func (r *Retained) Get(topic string) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[topic]
	return slices.Clone(e.payload), ok
}

// pending returns the entries newer than sent records, oldest Set first,
// and a channel closed by the next Set.
func (r *Retained) pending(sent map[string]uint64) (<-chan struct{}, []retainedItem) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var todo []retainedItem
	for t, e := range r.entries {
		if e.gen > sent[t] {
			todo = append(todo, retainedItem{topic: t, payload: e.payload, gen: e.gen})
		}
	}
	slices.SortFunc(todo, func(a, b retainedItem) int { return cmp.Compare(a.gen, b.gen) })
	return r.changed, todo
}
