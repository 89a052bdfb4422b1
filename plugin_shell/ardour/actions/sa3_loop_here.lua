ardour { ["type"] = "EditorAction", name = "SA3: loop here",
	license = "MIT", author = "SA3 in the DAW",
	description = [[A seamless loop of N bars from Stable Audio 3, placed at the range start (or the playhead) on the selected track]] }

function factory (params) return function ()
	-- @SA3@
	SA3.editor_action("loop", "SA3: loop here", function (o)
		if not o.track_object then return "Select a track (or a region on it) first." end
		if o.selection then o.position, o.selection = o.selection[1], nil end
	end, { { type = "number", key = "bars", title = "Bars", min = 1, max = 64, step = 1, digits = 0, default = 4 } },
	function (o, answers) o.bars = math.floor(answers.bars) end)
end end
