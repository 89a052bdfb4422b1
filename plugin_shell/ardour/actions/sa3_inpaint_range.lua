ardour { ["type"] = "EditorAction", name = "SA3: inpaint range",
	license = "MIT", author = "SA3 in the DAW",
	description = [[Regenerate the range selection inside the selected region with Stable Audio 3: a new layer above it, the original kept below]] }

function factory (params) return function ()
	-- @SA3@
	SA3.editor_action("inpaint", "SA3: inpaint range", function (o)
		if not (o.region and o.selection) then return "Select a region and a time range inside it." end
	end)
end end
