// Command forwarder is a WHIP-in, WHEP-out forwarder on pion/webrtc v3: the second,
// independent WebRTC stack the test suite checks the project's probes against
// (tests/test_pion.py). scripts/build-pion.sh builds it from Debian's packages.
//
// POST /whip/ROOM takes a publisher's SDP offer (VP8 or H.264 video, Opus audio) and
// POST /whep/ROOM a viewer's; each is answered 201 Created with the SDP answer and a
// Location, and DELETE on the Location ends that session. A viewer gets the publisher's
// tracks packet by packet as they came, payloads untouched: nothing is decoded or re-encoded,
// so what a viewer measures is what the publisher sent. Pion gives each viewer its own SSRC
// and payload type, as any forwarder must. A viewer's keyframe requests (PLI or FIR) go on to
// the publisher as a PLI, which is how a viewer who joined between keyframes gets one.
//
// Every peer is on this host: ICE gathers 127.0.0.1 only, without mDNS. The server prints one
// "listening on URL" line once it accepts connections; GET /healthz answers 200 from then on.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v3"
)

const (
	sdpType = "application/sdp"
	// A publisher's tracks exist once its first packets arrive, a moment after its answer:
	// a viewer's offer waits this long for them rather than being turned away.
	trackWait = 5 * time.Second
)

// The video codecs it answers with. Both common spellings of constrained-baseline H.264 are
// listed because pion matches the first two bytes of profile-level-id exactly. No RTX: a
// retransmission is resent in the original stream, which every peer here takes.
var videoCodecs = []webrtc.RTPCodecCapability{
	{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000},
	{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"},
	{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"},
}

func newAPI() (*webrtc.API, error) {
	media := &webrtc.MediaEngine{}
	feedback := []webrtc.RTCPFeedback{
		{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"},
	}
	for i, codec := range videoCodecs {
		codec.RTCPFeedback = feedback
		params := webrtc.RTPCodecParameters{RTPCodecCapability: codec, PayloadType: webrtc.PayloadType(96 + i)}
		if err := media.RegisterCodec(params, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, err
		}
	}
	opus := webrtc.RTPCodecParameters{PayloadType: 111, RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}}
	if err := media.RegisterCodec(opus, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	// NACK responses to viewers, receiver and sender reports, transport-wide congestion
	// feedback to publishers: what pion does for any peer by default.
	registry := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(media, registry); err != nil {
		return nil, err
	}
	settings := webrtc.SettingEngine{}
	settings.SetIncludeLoopbackCandidate(true)
	settings.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	settings.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	settings.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	return webrtc.NewAPI(webrtc.WithMediaEngine(media), webrtc.WithInterceptorRegistry(registry),
		webrtc.WithSettingEngine(settings)), nil
}

// A room: one publisher and the tracks viewers are given.
type room struct {
	publisher *webrtc.PeerConnection
	ready     chan struct{} // closed once every track the publisher offered has started

	mu        sync.Mutex
	want      int
	tracks    []*webrtc.TrackLocalStaticRTP
	videoSSRC webrtc.SSRC // the publisher's video stream, which keyframe requests name
}

// forward writes each packet of a publisher's track to every viewer of it.
func (rm *room) forward(remote *webrtc.TrackRemote, receiver *webrtc.RTPReceiver) {
	kind := remote.Kind().String()
	local, err := webrtc.NewTrackLocalStaticRTP(remote.Codec().RTPCodecCapability, kind, "pion")
	if err != nil {
		log.Printf("cannot forward a %s track: %v", kind, err)
		return
	}
	rm.mu.Lock()
	rm.tracks = append(rm.tracks, local)
	if remote.Kind() == webrtc.RTPCodecTypeVideo {
		rm.videoSSRC = remote.SSRC()
	}
	if len(rm.tracks) == rm.want {
		close(rm.ready)
	}
	rm.mu.Unlock()
	go drain(receiver.ReadRTCP) // pion's report interceptors see the publisher's RTCP only if it is read
	for {
		packet, _, err := remote.ReadRTP()
		if err != nil {
			return
		}
		// Header extension IDs were negotiated with the publisher; to a viewer the same IDs
		// may name other extensions (its mid, for one), so none is passed on.
		packet.Extension, packet.ExtensionProfile, packet.Extensions = false, 0, nil
		// Pion 3.1's track writer sends a packet's header and payload but not its padding,
		// with the header's padding bit still set: a receiver reads the last byte as the
		// padding length and drops the packet as malformed, and the gap it leaves stalls a
		// jitter buffer that waits for it. libwebrtc sends such packets whenever it probes
		// the bandwidth without RTX. So the padding goes back at the end of the payload.
		if packet.Padding && packet.PaddingSize > 0 {
			padded := make([]byte, len(packet.Payload)+int(packet.PaddingSize))
			copy(padded, packet.Payload)
			padded[len(padded)-1] = packet.PaddingSize
			packet.Payload, packet.PaddingSize = padded, 0
		}
		// An error is a viewer gone (the others were still written to); the track goes on.
		_ = local.WriteRTP(packet)
	}
}

func (rm *room) requestKeyframe() {
	rm.mu.Lock()
	ssrc := rm.videoSSRC
	rm.mu.Unlock()
	if ssrc != 0 {
		_ = rm.publisher.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(ssrc)}})
	}
}

func drain(read func() ([]rtcp.Packet, interceptor.Attributes, error)) {
	for {
		if _, _, err := read(); err != nil {
			return
		}
	}
}

type session struct {
	pc   *webrtc.PeerConnection
	kind string // "whip" or "whep"
	room string
	rm   *room // set for a publisher's session: ending it empties the room
}

type server struct {
	api      *webrtc.API
	mu       sync.Mutex
	rooms    map[string]*room
	sessions map[string]session // by Location
}

func (s *server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 2 || len(parts) > 3 || parts[1] == "" || (parts[0] != "whip" && parts[0] != "whep") {
		http.NotFound(w, r)
		return
	}
	switch {
	case len(parts) == 2 && r.Method == http.MethodPost && parts[0] == "whip":
		s.publish(w, r, parts[1])
	case len(parts) == 2 && r.Method == http.MethodPost:
		s.view(w, r, parts[1])
	case len(parts) == 3 && r.Method == http.MethodDelete:
		if !s.end(r.URL.Path) {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(http.StatusOK)
	case len(parts) == 2:
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST with an SDP offer", http.StatusMethodNotAllowed)
	default:
		w.Header().Set("Allow", http.MethodDelete)
		http.Error(w, "use DELETE to end the session", http.StatusMethodNotAllowed)
	}
}

func (s *server) publish(w http.ResponseWriter, r *http.Request, name string) {
	pc, ok := s.accept(w, r)
	if !ok {
		return
	}
	rm := &room{publisher: pc, ready: make(chan struct{}), want: len(pc.GetTransceivers())}
	s.mu.Lock()
	taken := s.rooms[name] != nil
	if !taken {
		s.rooms[name] = rm
	}
	s.mu.Unlock()
	if taken {
		_ = pc.Close()
		http.Error(w, "room "+name+" already has a publisher", http.StatusConflict)
		return
	}
	pc.OnTrack(rm.forward)
	s.answer(w, pc, session{pc, "whip", name, rm})
}

func (s *server) view(w http.ResponseWriter, r *http.Request, name string) {
	s.mu.Lock()
	rm := s.rooms[name]
	s.mu.Unlock()
	if rm == nil {
		http.Error(w, "no publisher in room "+name, http.StatusNotFound)
		return
	}
	select {
	case <-rm.ready:
	case <-time.After(trackWait):
		http.Error(w, "the publisher of room "+name+" sends no media", http.StatusServiceUnavailable)
		return
	case <-r.Context().Done():
		return
	}
	pc, ok := s.accept(w, r)
	if !ok {
		return
	}
	rm.mu.Lock()
	tracks := append([]*webrtc.TrackLocalStaticRTP(nil), rm.tracks...)
	rm.mu.Unlock()
	for _, track := range tracks {
		sender, err := pc.AddTrack(track)
		if err != nil {
			_ = pc.Close()
			message := "cannot add the publisher's " + track.Kind().String() + ": " + err.Error()
			http.Error(w, message, http.StatusInternalServerError)
			return
		}
		go func() {
			for {
				packets, _, err := sender.ReadRTCP()
				if err != nil {
					return
				}
				for _, packet := range packets {
					switch packet.(type) {
					case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
						rm.requestKeyframe()
					}
				}
			}
		}()
	}
	s.answer(w, pc, session{pc, "whep", name, nil})
}

// accept reads an SDP offer into a new peer connection; on failure it has replied.
func (s *server) accept(w http.ResponseWriter, r *http.Request) (*webrtc.PeerConnection, bool) {
	if kind := strings.TrimSpace(strings.Split(r.Header.Get("Content-Type"), ";")[0]); kind != sdpType {
		http.Error(w, "the offer must be "+sdpType, http.StatusUnsupportedMediaType)
		return nil, false
	}
	offer, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err != nil {
		http.Error(w, "cannot read the offer: "+err.Error(), http.StatusBadRequest)
		return nil, false
	}
	pc, err := s.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return nil, false
	}
	description := webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(offer)}
	if err := pc.SetRemoteDescription(description); err != nil {
		_ = pc.Close()
		http.Error(w, "bad offer: "+err.Error(), http.StatusBadRequest)
		return nil, false
	}
	return pc, true
}

// answer replies 201 with the answer, every candidate in it, and the session's Location.
func (s *server) answer(w http.ResponseWriter, pc *webrtc.PeerConnection, sess session) {
	answer, err := pc.CreateAnswer(nil)
	gathered := webrtc.GatheringCompletePromise(pc)
	if err == nil {
		err = pc.SetLocalDescription(answer)
	}
	if err != nil {
		s.drop(sess)
		_ = pc.Close()
		http.Error(w, "cannot answer: "+err.Error(), http.StatusBadRequest)
		return
	}
	<-gathered
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	location := fmt.Sprintf("/%s/%s/%s", sess.kind, sess.room, hex.EncodeToString(id))
	s.mu.Lock()
	s.sessions[location] = sess
	s.mu.Unlock()
	pc.OnConnectionStateChange(func(state webrtc.PeerConnectionState) {
		if state == webrtc.PeerConnectionStateFailed || state == webrtc.PeerConnectionStateClosed {
			s.end(location)
		}
	})
	w.Header().Set("Content-Type", sdpType)
	w.Header().Set("Location", location)
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, pc.LocalDescription().SDP)
}

// end closes the session at location; false if there is none.
func (s *server) end(location string) bool {
	s.mu.Lock()
	sess, ok := s.sessions[location]
	delete(s.sessions, location)
	s.mu.Unlock()
	if ok {
		s.drop(sess)
		_ = sess.pc.Close()
	}
	return ok
}

// drop empties a publisher's room, so that a new publisher can take it.
func (s *server) drop(sess session) {
	s.mu.Lock()
	if sess.rm != nil && s.rooms[sess.room] == sess.rm {
		delete(s.rooms, sess.room)
	}
	s.mu.Unlock()
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("forwarder: ")
	listen := flag.String("listen", "127.0.0.1:8089", "address to serve HTTP on (port 0: any free port)")
	flag.Parse()
	api, err := newAPI()
	if err != nil {
		log.Fatal(err)
	}
	s := &server{api: api, rooms: map[string]*room{}, sessions: map[string]session{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/", s.serveHTTP)
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on http://%s\n", listener.Addr())
	log.Fatal(http.Serve(listener, mux))
}
