ardour { ["type"] = "EditorAction", name = "SA3: loop here",
	license = "MIT", author = "SA3 in the DAW",
	description = [[A seamless loop of N bars from Stable Audio 3, placed at the range start (or the playhead) on the selected track]] }

function factory (params) return function ()
	-- @SA3@
	local o = SA3.selection()
	if not o.track_object then
		LuaDialog.Message("SA3: loop here", "Select a track (or a region on it) first.", LuaDialog.MessageType.Info, LuaDialog.ButtonType.Close):run()
		return
	end
	if o.selection then o.position = o.selection[1] o.selection = nil end
	local answers = SA3.ask("SA3: loop here", { { type = "number", key = "bars", title = "Bars", min = 1, max = 64, step = 1, digits = 0, default = 4 } })
	if not answers then return end
	o.prompt, o.seed, o.bars = answers.prompt, math.floor(answers.seed), math.floor(answers.bars)
	SA3.run("loop", o)
end end
