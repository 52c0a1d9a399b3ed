package agent

import (
	"net"
	"strings"
	"testing"
	"time"
)

// leased starts corkd's side of the leases with limits perUID and total
// and returns a worker's side and the counts it takes from.
func leased(t *testing.T, perUID, total int) (*leases, *Server, net.Conn) {
	t.Helper()
	s := New(Config{Forward: ForwardConfig{MaxStreamsPerUID: perUID, MaxStreams: total}})
	here, there := net.Pipe()
	done := make(chan struct{})
	go func() {
		s.serveLeases(here)
		close(done)
	}()
	t.Cleanup(func() {
		there.Close()
		here.Close()
		<-done
	})
	return newLeases(there), s, there
}

func counted(s *Server, uid uint32) (int, int) {
	s.streamsPerUID.mu.Lock()
	defer s.streamsPerUID.mu.Unlock()
	return s.streamsPerUID.n[uid], s.streamsPerUID.total
}

func waitCounted(t *testing.T, s *Server, uid uint32, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n, _ := counted(s, uid); n != want; n, _ = counted(s, uid) {
		if time.Now().After(deadline) {
			t.Fatalf("corkd counts %d streams of uid %d, want %d", n, uid, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// A worker leases a batch and uses it without asking again.
func TestLeasesComeInBatches(t *testing.T) {
	l, s, _ := leased(t, 100, 100)
	for range leaseBatch {
		if _, err := l.take(7, 100, 100); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := counted(s, 7); n != leaseBatch {
		t.Fatalf("%d streams taken in corkd for %d used, want one batch", n, leaseBatch)
	}
}

// The limits hold across workers: what one leased, another cannot have,
// and the refusal names the flag.
func TestLeasesHoldTheLimitsAcrossWorkers(t *testing.T) {
	l1, s, _ := leased(t, 3, 100)
	here, there := net.Pipe()
	go s.serveLeases(here)
	t.Cleanup(func() { there.Close(); here.Close() })
	l2 := newLeases(there)
	if _, err := l1.take(7, 3, 100); err != nil {
		t.Fatal(err)
	}
	_, err := l2.take(7, 3, 100)
	if err == nil || !strings.Contains(err.Error(), "--max-streams-per-uid") {
		t.Fatalf("a second worker past the uid's 3 (the first leased them): %v", err)
	}
	if _, err := l2.take(8, 3, 100); err != nil {
		t.Fatalf("another uid: %v", err)
	}
}

// Unused streams past two batches go back at once, and the rest once
// none has been in use for leaseIdle; what a worker holds goes back when
// it ends.
func TestLeasesGoBack(t *testing.T) {
	l, s, there := leased(t, 100, 100)
	var releases []func()
	for range 3 * leaseBatch {
		r, err := l.take(7, 100, 100)
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	for _, r := range releases[1:] {
		r()
		r() // twice: counted once
	}
	waitCounted(t, s, 7, 2*leaseBatch) // 1 in use, 7 unused: fewer than two batches
	releases[0]()
	waitCounted(t, s, 7, 0) // idle
	if _, err := l.take(7, 100, 100); err != nil {
		t.Fatal(err)
	}
	there.Close()
	waitCounted(t, s, 7, 0) // the worker's end
}

// A stream in use keeps its uid's lease: the idle return, however late,
// gives nothing back while one is open.
func TestLeasesInUseStay(t *testing.T) {
	l, s, _ := leased(t, 100, 100)
	r1, _ := l.take(7, 100, 100)
	r2, _ := l.take(7, 100, 100)
	r1()
	l.mu.Lock()
	h := l.held[7]
	h.idleSince = time.Now().Add(-time.Hour)
	l.mu.Unlock()
	l.returnIdle(7, h)
	l.mu.Lock()
	kept, queued := l.held[7] == h && h.held == leaseBatch, len(l.give)
	l.mu.Unlock()
	if !kept || queued != 0 {
		t.Fatalf("with a stream open, the idle return kept the lease: %v, queued %d gives", kept, queued)
	}
	r2()
	waitCounted(t, s, 7, 0)
}

// A worker that gives back what it does not hold, or asks for more than a
// batch, loses its leases.
func TestLeasesOutOfBoundsEnd(t *testing.T) {
	for _, msg := range [][]byte{putLease(leaseGive, 7, 3), putLease(leaseTake, 7, leaseBatch+1), putLease(9, 7, 1)} {
		_, s, there := leased(t, 100, 100)
		there.Write(putLease(leaseTake, 7, 2))
		readLease(there)
		there.Write(msg)
		waitCounted(t, s, 7, 0)
	}
}

// Streams that open at once share the lease one of them asked for.
func TestLeasesAtOnceShareARoundTrip(t *testing.T) {
	l, s, _ := leased(t, 100, 100)
	done := make(chan error)
	for range leaseBatch {
		go func() {
			_, err := l.take(7, 100, 100)
			done <- err
		}()
	}
	for range leaseBatch {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := counted(s, 7); n != leaseBatch {
		t.Fatalf("%d streams taken in corkd for %d opened at once, want one batch", n, leaseBatch)
	}
}
