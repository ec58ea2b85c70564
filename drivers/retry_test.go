package drivers

import (
	"context"
	"errors"
	"testing"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

// TestRetrying: a driver whose construction failed reports that failure
// once, is built again on each later call until that succeeds, and is used
// from then on; it is a Poller or a Watcher as its kind says.
func TestRetrying(t *testing.T) {
	t.Run("poller", func(t *testing.T) {
		first := errors.New("no chip yet")
		spec := Spec{Name: "s", Kind: "sim", Options: &SimOptions{Min: 3, Max: 3}}
		it, err := Retrying(spec, Env{}, first)
		if err != nil {
			t.Fatal(err)
		}
		p := it.Poller()
		if p == nil || it.Watcher() != nil {
			t.Fatalf("item %+v, want a Poller", it)
		}
		if err := p.Halt(); err != nil { // nothing built: nothing to halt
			t.Fatal(err)
		}
		if _, err := p.Read(context.Background()); !errors.Is(err, first) {
			t.Fatalf("first Read = %v, want the construction error", err)
		}
		r := p.(*retryPoller)
		if r.it.driver() != nil {
			t.Fatal("built before the second call")
		}
		var built Poller
		for i := range 2 {
			got, err := p.Read(context.Background())
			if err != nil || len(got) != 1 || got[0].Value != 3 {
				t.Fatalf("Read = %v, %v", got, err)
			}
			if i == 0 {
				built = r.it.Poller()
			} else if r.it.Poller() != built {
				t.Error("built again after a success")
			}
		}
		if err := p.Halt(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("construction keeps failing", func(t *testing.T) {
		it, err := Retrying(Spec{Name: "b", Kind: "bme280", Bus: "1"}, Env{}, errors.New("first"))
		if err != nil {
			t.Fatal(err)
		}
		p := it.Poller()
		if _, err := p.Read(context.Background()); err == nil || err.Error() != "first" {
			t.Fatalf("first Read = %v", err)
		}
		if _, err := p.Read(context.Background()); err == nil || err.Error() != "driver b (bme280): no I2C buses in this environment" {
			t.Fatalf("second Read = %v, want the new construction error", err)
		}
	})
	t.Run("watcher", func(t *testing.T) {
		pin := &gpiotest.Pin{N: "GPIO17", EdgesChan: make(chan gpio.Level)}
		env := Env{Pin: func(string) (gpio.PinIn, error) { return pin, nil }}
		it, err := Retrying(Spec{Name: "door", Kind: "gpio", Options: &GPIOOptions{Pin: "GPIO17"}}, env, errors.New("first"))
		if err != nil {
			t.Fatal(err)
		}
		w := it.Watcher()
		if w == nil || it.Poller() != nil {
			t.Fatalf("item %+v, want a Watcher", it)
		}
		if err := w.Watch(context.Background(), func(Sample) {}); err == nil || err.Error() != "first" {
			t.Fatalf("first Watch = %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		samples := make(chan Sample, 1)
		done := make(chan error, 1)
		go func() { done <- w.Watch(ctx, func(s Sample) { samples <- s }) }()
		<-samples // built and watching: the initial level
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Watch = %v", err)
		}
		if err := w.Halt(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unknown kind", func(t *testing.T) {
		if _, err := Retrying(Spec{Name: "x", Kind: "nope"}, Env{}, errors.New("first")); !errors.Is(err, ErrUnknownKind) {
			t.Fatalf("Retrying = %v, want ErrUnknownKind", err)
		}
	})
}

// TestKinds: the table is sorted, every kind builds its options type, and
// exactly the pin kinds watch.
func TestKinds(t *testing.T) {
	names := KindNames()
	want := []string{"ads1115", "bme280", "counter", "ds18b20", "gpio", "gpio_out", "sim", "sht3x"}
	if len(names) != len(want) {
		t.Fatalf("KindNames = %v, want %v", names, want)
	}
	for i, k := range Kinds() {
		if k.Name != want[i] || names[i] != want[i] {
			t.Errorf("kind %d = %q, want %q", i, k.Name, want[i])
		}
		if o := k.NewOptions(); o == nil {
			t.Errorf("%s: NewOptions returned nil", k.Name)
		}
		if w := k.Name == "gpio" || k.Name == "counter" || k.Name == "gpio_out"; k.Watches() != w {
			t.Errorf("%s: Watches = %v", k.Name, k.Watches())
		}
	}
	if _, ok := Lookup("nope"); ok {
		t.Error(`Lookup("nope") found a kind`)
	}
	if _, err := New(Spec{Name: "x", Kind: "nope"}, Env{}); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("New = %v, want ErrUnknownKind", err)
	}
}
