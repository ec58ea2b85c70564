package bench

import (
	"bytes"
	"errors"
	"flag"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	defaults := Config{
		Broker: DefaultBroker, Publishers: 50, Messages: 1000, QoS: 1, PayloadSize: 100, Inflight: 1,
		Topic: "bench", ClientPrefix: DefaultClientPrefix, SubTopic: "#", Settle: DefaultSettle, Timeout: DefaultTimeout,
	}
	with := func(f func(*Config)) Config { c := defaults; f(&c); return c }
	tests := []struct {
		name    string
		args    []string
		want    Config
		wantErr string
	}{
		{name: "defaults", args: nil, want: defaults},
		{
			name: "everything",
			args: []string{"-broker", "tcp://10.0.0.2:1884", "-n", "8", "-m", "250", "-qos", "0", "-size", "33",
				"-inflight", "16", "-topic", "load/x", "-sub", "tcp://cloud:1883", "-sub-topic", "ferry/#",
				"-settle", "5s", "-timeout", "0", "-json", "-client-prefix", "pi7", "-username", "u", "-password", "p"},
			want: Config{Broker: "tcp://10.0.0.2:1884", Publishers: 8, Messages: 250, QoS: 0, PayloadSize: 33,
				Inflight: 16, Topic: "load/x", ClientPrefix: "pi7", Username: "u", Password: "p",
				Subscribe: "tcp://cloud:1883", SubTopic: "ferry/#", Settle: 5 * time.Second, JSON: true},
		},
		{name: "settle zero means no wait", args: []string{"-settle", "0"}, want: with(func(c *Config) { c.Settle = 0 })},
		{name: "qos 2", args: []string{"-qos", "2"}, wantErr: "-qos 2"},
		{name: "payload below header", args: []string{"-size", "32"}, wantErr: "payload size 32"},
		{name: "zero publishers", args: []string{"-n", "0"}, wantErr: "0 publishers"},
		{name: "zero messages: connect only", args: []string{"-m", "0", "-hold", "20s"}, want: with(func(c *Config) { c.Messages, c.Hold = 0, 20*time.Second })},
		{name: "negative messages", args: []string{"-m", "-1"}, wantErr: "-1 messages"},
		{name: "negative hold", args: []string{"-hold", "-1s"}, wantErr: "hold"},
		{name: "inflight too big", args: []string{"-inflight", "70000"}, wantErr: "inflight 70000"},
		{name: "wildcard topic", args: []string{"-topic", "a/#"}, wantErr: "wildcards"},
		{name: "bad broker url", args: []string{"-broker", "localhost:1883"}, wantErr: "want tcp://host:port"},
		{name: "bad sub url", args: []string{"-sub", "cloud"}, wantErr: "subscribe broker"},
		{name: "negative settle", args: []string{"-settle", "-1s"}, wantErr: "settle"},
		{name: "unknown flag", args: []string{"-bogus"}, wantErr: "parse flags"},
		{name: "positional argument", args: []string{"extra"}, wantErr: "unexpected argument"},
		{name: "not a number", args: []string{"-n", "many"}, wantErr: "parse flags"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			got, err := ParseFlags(tt.args, &stderr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				if stderr.Len() == 0 {
					t.Error("nothing written to stderr")
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v (stderr %s)", err, stderr.String())
			}
			if got.Now != nil || got.Unwrap != nil {
				t.Error("ParseFlags must leave Now and Unwrap to Run")
			}
			got.Now, got.Unwrap = nil, nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseFlagsHelp(t *testing.T) {
	var stderr bytes.Buffer
	_, err := ParseFlags([]string{"-h"}, &stderr)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	for _, f := range []string{"-broker", "-n", "-m", "-qos", "-size", "-inflight", "-topic", "-sub", "-sub-topic", "-settle", "-timeout", "-json"} {
		if !strings.Contains(stderr.String(), "  "+f+" ") && !strings.Contains(stderr.String(), "  "+f+"\n") {
			t.Errorf("usage does not mention %s:\n%s", f, stderr.String())
		}
	}
}
