ardour { ["type"] = "EditorAction", name = "SA3: variation",
	license = "MIT", author = "SA3 in the DAW",
	description = [[A Stable Audio 3 variation of the selected region: a new layer above it, the original kept below]] }

function factory (params) return function ()
	-- @SA3@
	SA3.editor_action("variation", "SA3: variation", function (o)
		if not o.region then return "Select the region to vary." end
		o.selection = nil
	end, { { type = "number", key = "level", title = "How much to change (0..1)", min = 0.05, max = 1, step = 0.05, digits = 2, default = 0.7 } },
	function (o, answers) o.init_noise_level = answers.level end)
end end
