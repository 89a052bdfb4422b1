-- Build a 48 kHz session headless: 120 bpm 4/4, then 150 bpm in 7/8 from quarter 4 (bar 2),
-- tracks "Keys" and "Drums" routed to the master bus. Usage: ardour7-lua build.lua PARAMS.lua
local P = dofile(arg[1])
AudioEngine:set_backend("None (Dummy)", "", "")
local session = create_session(P.folder, P.name, 48000)
assert(session, "could not create the session")
local tm = Temporal.TempoMap.fetch_writable()
tm:set_tempo(Temporal.Tempo(120, 120, 4), Temporal.timepos_t(0))
tm:set_meter(Temporal.Meter(7, 8), Temporal.timepos_t.from_ticks(Temporal.ticks_per_beat * 4))
tm:set_tempo(Temporal.Tempo(150, 150, 4), Temporal.timepos_t.from_ticks(Temporal.ticks_per_beat * 4))
Temporal.TempoMap.update(tm)
tm = nil
for _, name in ipairs({ "Keys", "Drums" }) do
	local tracks = session:new_audio_track(2, 2, nil, 1, name, ARDOUR.PresentationInfo.max_order, ARDOUR.TrackMode.Normal, true)
	local master = session:master_out():input()
	for track in tracks:iter() do
		for i = 0, 1 do track:output():audio(i):connect(master:audio(i):name()) end
	end
end
session:save_state("", false, false, false, false, false)
close_session()
print("BUILT")
