ardour { ["type"] = "EditorAction", name = "SA3: extend to end",
	license = "MIT", author = "SA3 in the DAW",
	description = [[Continue the selected region with Stable Audio 3 up to the session end marker, placed right after it]] }

function factory (params) return function ()
	-- @SA3@
	SA3.editor_action("extend", "SA3: extend to end", function (o)
		if not o.region then return "Select the region to extend." end
		o.selection = nil
	end)
end end
