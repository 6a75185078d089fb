package port

import (
	"slices"
	"testing"

	"github.com/butterfly-go/butterfly/internal/packet"
)

// TestMoveSent: handling frames in order with MoveSent (sent) and
// dropped+1 (refused) leaves the sent frames first, in their original
// order, then the refused ones, then those not handled.
func TestMoveSent(t *testing.T) {
	for _, fates := range []string{"", "s", "d", "ssss", "dddd", "sdsd", "ddss", "sdds-", "dsd--", "s-"} {
		bufs := make([]*packet.Buf, len(fates))
		for i := range bufs {
			bufs[i] = packet.NewBuf()
			bufs[i].SetLen(i + 1) // the frame's original position, plus one
		}
		var wantSent, wantDropped, wantRest []int
		sent, dropped := 0, 0
		for i, f := range fates {
			switch f {
			case 's':
				sent = MoveSent(bufs, sent, dropped)
				wantSent = append(wantSent, i+1)
			case 'd':
				dropped++
				wantDropped = append(wantDropped, i+1)
			default:
				wantRest = append(wantRest, i+1)
			}
		}
		lens := func(bs []*packet.Buf) []int {
			var out []int
			for _, b := range bs {
				out = append(out, b.Len())
			}
			return out
		}
		gotDropped := lens(bufs[sent : sent+dropped])
		slices.Sort(gotDropped)
		if got := lens(bufs[:sent]); !slices.Equal(got, wantSent) || !slices.Equal(gotDropped, wantDropped) ||
			!slices.Equal(lens(bufs[sent+dropped:]), wantRest) {
			t.Errorf("%q: sent %v, refused %v, rest %v; want %v, %v (any order), %v", fates,
				lens(bufs[:sent]), lens(bufs[sent:sent+dropped]), lens(bufs[sent+dropped:]), wantSent, wantDropped, wantRest)
		}
	}
}
